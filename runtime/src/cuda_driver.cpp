#include "runtime/src/cuda_driver.h"

#include <cudaTypedefs.h>
#include <dlfcn.h>

#include <type_traits>

#include <string>

namespace moejit {

// Each entry's version must name the typedef of the signature it is declared
// with, or the driver would hand back a function of another signature.
#define MOEJIT_CHECK_ENTRY_VERSION(name, version)                                                  \
  static_assert(std::is_same_v<PFN_##name##_v##version, decltype(&::name)>,                      \
                #name ": the version in MOEJIT_CUDA_DRIVER_ENTRIES does not match cuda.h");
MOEJIT_CUDA_DRIVER_ENTRIES(MOEJIT_CHECK_ENTRY_VERSION)
#undef MOEJIT_CHECK_ENTRY_VERSION

namespace {

using GetProcAddress = decltype(&::cuGetProcAddress);

std::string noDriverMessage(const std::string &library, const char *detail) {
  std::string message = "no CUDA driver (" + library +
                        " not found): moejit can parse and compile here but needs an "
                        "NVIDIA GPU to run";
  if (detail && *detail)
    message += " [" + std::string(detail) + "]";
  return message;
}

} // namespace

std::shared_ptr<const CudaDriver> CudaDriver::load(const std::string &library) {
  void *handle = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle)
    throw Error(noDriverMessage(library, dlerror()), ErrorKind::NoGpu);
  std::shared_ptr<CudaDriver> driver(new CudaDriver(handle));

  // cuGetProcAddress (not dlsym of guessed names) gives the entry point of
  // the exact API version each member is typed for.
  auto getProcAddress = reinterpret_cast<GetProcAddress>(dlsym(handle, "cuGetProcAddress_v2"));
  if (!getProcAddress)
    throw Error(library + " has no cuGetProcAddress_v2: the CUDA driver is older than 12.0; "
                          "install a newer NVIDIA driver",
                ErrorKind::NoGpu);
  auto resolve = [&](auto &entry) {
    void *fn = nullptr;
    CUdriverProcAddressQueryResult status = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
    CUresult result =
        getProcAddress(entry.name, &fn, entry.version, CU_GET_PROC_ADDRESS_DEFAULT, &status);
    if (result != CUDA_SUCCESS || status != CU_GET_PROC_ADDRESS_SUCCESS || !fn)
      throw Error("the CUDA driver in " + library + " lacks " + entry.name +
                      " (needs a driver for CUDA " + std::to_string(CUDA_VERSION / 1000) + "." +
                      std::to_string(CUDA_VERSION % 1000 / 10) + " or newer)",
                  ErrorKind::NoGpu);
    entry.fn = reinterpret_cast<decltype(entry.fn)>(fn);
  };
#define MOEJIT_RESOLVE_ENTRY(name, version) resolve(driver->name);
  MOEJIT_CUDA_DRIVER_ENTRIES(MOEJIT_RESOLVE_ENTRY)
#undef MOEJIT_RESOLVE_ENTRY

  CUresult init = driver->cuInit.fn(0);
  if (init == CUDA_ERROR_NO_DEVICE)
    throw Error("the CUDA driver found no GPU (cuInit: " + driver->describe(init) +
                    "): moejit can parse and compile here but needs an NVIDIA GPU to run",
                ErrorKind::NoGpu);
  driver->check(init, driver->cuInit.name);
  driver->call(driver->cuDriverGetVersion, &driver->version_);
  return driver;
}

CudaDriver::~CudaDriver() {
  if (library_)
    dlclose(library_);
}

std::string CudaDriver::describe(CUresult result) const noexcept {
  try {
    const char *name = nullptr;
    const char *message = nullptr;
    if (cuGetErrorName.fn)
      cuGetErrorName.fn(result, &name);
    if (cuGetErrorString.fn)
      cuGetErrorString.fn(result, &message);
    std::string text = name ? name : "CUDA error " + std::to_string(static_cast<int>(result));
    if (message)
      text += std::string(": ") + message;
    return text;
  } catch (...) {
    return "CUDA error";
  }
}

void CudaDriver::check(CUresult result, const char *call) const {
  if (result != CUDA_SUCCESS)
    throw Error(std::string(call) + " failed: " + describe(result), ErrorKind::CudaCall);
}

} // namespace moejit
