#include "runtime/src/driver_info.h"

#include "runtime/src/device.h"

#include <exception>

namespace moejit {

GpuInfo queryGpuInfo(const std::string &driverLibrary) noexcept {
  GpuInfo info;
  try {
    std::shared_ptr<const CudaDriver> driver = CudaDriver::load(driverLibrary);
    info.driverLoaded = true;
    info.driverVersion = driver->version();
    Gpu gpu(driverLibrary);
    const DeviceProperties &props = gpu.properties();
    info.gpuPresent = true;
    info.name = props.name;
    info.computeMajor = props.computeMajor;
    info.computeMinor = props.computeMinor;
    info.smCount = props.smCount;
    info.maxSharedBytesPerBlockOptin = props.maxSharedBytesPerBlockOptin;
    info.totalMemoryBytes = props.totalMemoryBytes;
  } catch (const std::exception &e) {
    info.problem = e.what();
  } catch (...) {
    info.problem = "unknown error while querying the CUDA driver";
  }
  return info;
}

std::string archForComputeCapability(int major, int minor) {
  if (major == 9 && minor == 0)
    return "sm_90a";
  return "sm_" + std::to_string(major) + std::to_string(minor);
}

std::optional<std::string> defaultArchOfPresentGpu(const Knobs &knobs) noexcept {
  GpuInfo info = queryGpuInfo(knobs.cudaDriver);
  if (!info.gpuPresent)
    return std::nullopt;
  try {
    return archForComputeCapability(info.computeMajor, info.computeMinor);
  } catch (...) {
    return std::nullopt;
  }
}

void applyPresentGpu(const Knobs &knobs, Target &target) noexcept {
  GpuInfo info = queryGpuInfo(knobs.cudaDriver);
  if (!info.gpuPresent)
    return;
  target.smCount = info.smCount;
  target.maxSharedBytesPerBlock = info.maxSharedBytesPerBlockOptin;
}

Target runTarget(const std::string &archFlag, const Knobs &knobs) {
  const GpuInfo info = queryGpuInfo(knobs.cudaDriver);
  std::string arch = !archFlag.empty() ? archFlag : knobs.arch;
  if (arch.empty())
    arch =
        info.gpuPresent ? archForComputeCapability(info.computeMajor, info.computeMinor) : "sm_90a";
  Target target = Target::fromArch(arch);
  if (info.gpuPresent) {
    target.smCount = info.smCount;
    target.maxSharedBytesPerBlock = info.maxSharedBytesPerBlockOptin;
  }
  return target;
}

std::string describeGpu(const Knobs &knobs) noexcept {
  try {
    GpuInfo info = queryGpuInfo(knobs.cudaDriver);
    if (!info.driverLoaded)
      return "CUDA driver: none (" + info.problem + ")\n";
    std::string text = "CUDA driver: " + knobs.cudaDriver + ", CUDA " +
                       std::to_string(info.driverVersion / 1000) + "." +
                       std::to_string(info.driverVersion % 1000 / 10) + "\n";
    if (!info.gpuPresent)
      return text + "GPU: none (" + info.problem + ")\n";
    return text + "GPU 0: " + info.name + ", compute capability " +
           std::to_string(info.computeMajor) + "." + std::to_string(info.computeMinor) + " (" +
           archForComputeCapability(info.computeMajor, info.computeMinor) + "), " +
           std::to_string(info.smCount) + " SMs, " + std::to_string(info.totalMemoryBytes >> 20) +
           " MiB, " + std::to_string(info.maxSharedBytesPerBlockOptin) +
           " B shared/block (opt-in)\n";
  } catch (...) {
    return "CUDA driver: could not be described\n";
  }
}

} // namespace moejit
