// The CUDA driver API, loaded with dlopen: moejit links no libcuda, so it
// loads, parses and compiles on machines without a GPU.
#pragma once

#include "moejit/error.h"

#include <cuda.h>

#include <memory>
#include <string>

namespace moejit {

// Entry points used, by their unversioned names; cuda.h's macros map each to
// the versioned symbol whose signature the member's type takes, and the
// table asks the driver for exactly that version (CUDA_VERSION).
#define MOEJIT_CUDA_DRIVER_ENTRIES(X)                                                              \
  X(cuInit)                                                                                        \
  X(cuDriverGetVersion)                                                                            \
  X(cuGetErrorName)                                                                                \
  X(cuGetErrorString)                                                                              \
  X(cuDeviceGetCount)                                                                              \
  X(cuDeviceGet)                                                                                   \
  X(cuDeviceGetAttribute)                                                                          \
  X(cuDeviceGetName)                                                                               \
  X(cuDeviceTotalMem)                                                                              \
  X(cuDevicePrimaryCtxRetain)                                                                      \
  X(cuDevicePrimaryCtxRelease)                                                                     \
  X(cuCtxSetCurrent)                                                                               \
  X(cuCtxSynchronize)                                                                              \
  X(cuLinkCreate)                                                                                  \
  X(cuLinkAddData)                                                                                 \
  X(cuLinkComplete)                                                                                \
  X(cuLinkDestroy)                                                                                 \
  X(cuModuleLoadDataEx)                                                                            \
  X(cuModuleUnload)                                                                                \
  X(cuModuleGetFunction)                                                                           \
  X(cuFuncSetAttribute)                                                                            \
  X(cuFuncGetAttribute)                                                                            \
  X(cuLaunchKernel)                                                                                \
  X(cuMemAlloc)                                                                                    \
  X(cuMemFree)                                                                                     \
  X(cuMemcpyHtoD)                                                                                  \
  X(cuMemcpyDtoH)                                                                                  \
  X(cuMemcpyHtoDAsync)                                                                             \
  X(cuMemcpyDtoHAsync)                                                                             \
  X(cuMemsetD8)                                                                                    \
  X(cuMemsetD32)                                                                                   \
  X(cuMemsetD8Async)                                                                               \
  X(cuMemsetD32Async)                                                                              \
  X(cuStreamCreate)                                                                                \
  X(cuStreamDestroy)                                                                               \
  X(cuStreamSynchronize)                                                                           \
  X(cuEventCreate)                                                                                 \
  X(cuEventRecord)                                                                                 \
  X(cuEventSynchronize)                                                                            \
  X(cuEventElapsedTime)                                                                            \
  X(cuEventDestroy)

// One resolved entry point and the name it is reported under.
template <class Fn> struct DriverEntry {
  Fn fn = nullptr;
  const char *name = nullptr;
};

// The loaded driver library and its entry points. Owned through a shared_ptr
// by every object that makes driver calls, so the library stays loaded until
// the last handle is gone.
class CudaDriver {
public:
  // dlopen()s `library`, resolves every entry and calls cuInit(0). Throws
  // Error(NoGpu) when the library is missing or the driver finds no device,
  // Error(CudaCall) for other driver failures.
  static std::shared_ptr<const CudaDriver> load(const std::string &library = "libcuda.so.1");

  CudaDriver(const CudaDriver &) = delete;
  CudaDriver &operator=(const CudaDriver &) = delete;
  ~CudaDriver();

  // Calls `entry` and throws Error(CudaCall) naming the call when it fails.
  template <class... Params, class... Args>
  void call(const DriverEntry<CUresult (*)(Params...)> &entry, Args &&...args) const {
    check(entry.fn(std::forward<Args>(args)...), entry.name);
  }
  // Throws Error(CudaCall) "<call> failed: CUDA_ERROR_X: message" unless ok.
  void check(CUresult result, const char *call) const;
  // "CUDA_ERROR_X: message" (never throws).
  std::string describe(CUresult result) const noexcept;

  int version() const noexcept { return version_; } // e.g. 13000

#define MOEJIT_DECLARE_ENTRY(name) DriverEntry<decltype(&::name)> name{nullptr, #name};
  MOEJIT_CUDA_DRIVER_ENTRIES(MOEJIT_DECLARE_ENTRY)
#undef MOEJIT_DECLARE_ENTRY

private:
  explicit CudaDriver(void *library) : library_(library) {}

  void *library_ = nullptr;
  int version_ = 0;
};

} // namespace moejit
