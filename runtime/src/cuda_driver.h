// The CUDA driver API, loaded with dlopen: moejit links no libcuda, so it
// loads, parses and compiles on machines without a GPU.
#pragma once

#include "moejit/error.h"

#include <cuda.h>

#include <memory>
#include <string>

namespace moejit {

// Entry points used, each with the API version whose signature cuda.h
// declares for it (cudaTypedefs.h's PFN_<name>_v<version>; checked at compile
// time in cuda_driver.cpp). The driver is asked for exactly that version:
// asking for CUDA_VERSION instead can return a newer entry point with another
// signature (CUDA 13's cuCtxSynchronize takes a context).
#define MOEJIT_CUDA_DRIVER_ENTRIES(X)                                                              \
  X(cuInit, 2000)                                                                                  \
  X(cuDriverGetVersion, 2020)                                                                      \
  X(cuGetErrorName, 6000)                                                                          \
  X(cuGetErrorString, 6000)                                                                        \
  X(cuDeviceGetCount, 2000)                                                                        \
  X(cuDeviceGet, 2000)                                                                             \
  X(cuDeviceGetAttribute, 2000)                                                                    \
  X(cuDeviceGetName, 2000)                                                                         \
  X(cuDeviceTotalMem, 3020)                                                                        \
  X(cuDevicePrimaryCtxRetain, 7000)                                                                \
  X(cuDevicePrimaryCtxRelease, 11000)                                                              \
  X(cuCtxSetCurrent, 4000)                                                                         \
  X(cuCtxSynchronize, 2000)                                                                        \
  X(cuModuleLoadDataEx, 2010)                                                                      \
  X(cuModuleUnload, 2000)                                                                          \
  X(cuModuleGetFunction, 2000)                                                                     \
  X(cuFuncSetAttribute, 9000)                                                                      \
  X(cuFuncGetAttribute, 2020)                                                                      \
  X(cuLaunchKernel, 4000)                                                                          \
  X(cuOccupancyMaxActiveClusters, 11070)                                                           \
  X(cuTensorMapEncodeTiled, 12000)                                                                 \
  X(cuMemAlloc, 3020)                                                                              \
  X(cuMemFree, 3020)                                                                               \
  X(cuMemcpyHtoD, 3020)                                                                            \
  X(cuMemcpyDtoH, 3020)                                                                            \
  X(cuMemcpyHtoDAsync, 3020)                                                                       \
  X(cuMemcpyDtoHAsync, 3020)                                                                       \
  X(cuMemsetD8, 3020)                                                                              \
  X(cuMemsetD32, 3020)                                                                             \
  X(cuMemsetD8Async, 3020)                                                                         \
  X(cuMemsetD32Async, 3020)                                                                        \
  X(cuStreamCreate, 2000)                                                                          \
  X(cuStreamDestroy, 4000)                                                                         \
  X(cuStreamSynchronize, 2000)                                                                     \
  X(cuEventCreate, 2000)                                                                           \
  X(cuEventRecord, 2000)                                                                           \
  X(cuEventSynchronize, 2000)                                                                      \
  X(cuEventElapsedTime, 12080)                                                                     \
  X(cuEventDestroy, 4000)

// One resolved entry point and the name it is reported under.
template <class Fn> struct DriverEntry {
  Fn fn = nullptr;
  const char *name = nullptr;
  int version = 0; // the API version the driver is asked for
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

#define MOEJIT_DECLARE_ENTRY(name, version)                                             \
  DriverEntry<decltype(&::name)> name{nullptr, #name, version};
  MOEJIT_CUDA_DRIVER_ENTRIES(MOEJIT_DECLARE_ENTRY)
#undef MOEJIT_DECLARE_ENTRY

private:
  explicit CudaDriver(void *library) : library_(library) {}

  void *library_ = nullptr;
  int version_ = 0;
};

} // namespace moejit
