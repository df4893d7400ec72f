// What the CUDA driver says about the GPU present, for `moejit info` and for
// choosing the default target. Nothing here throws.
#pragma once

#include "moejit/knobs.h"
#include "moejit/spec.h"

#include <cstddef>
#include <optional>
#include <string>

namespace moejit {

struct GpuInfo {
  bool driverLoaded = false; // the library loaded and cuInit succeeded
  bool gpuPresent = false;   // ... and device 0 could be queried
  std::string problem;       // why not, when either is false
  int driverVersion = 0;     // e.g. 13000
  std::string name;
  int computeMajor = 0, computeMinor = 0;
  int smCount = 0;
  int maxSharedBytesPerBlockOptin = 0;
  size_t totalMemoryBytes = 0;
};

GpuInfo queryGpuInfo(const std::string &driverLibrary) noexcept;

// The arch moejit targets on a GPU of this compute capability: "sm_90a" for
// Hopper (wgmma needs the arch-specific variant), else "sm_<major><minor>".
std::string archForComputeCapability(int major, int minor);

// The arch of GPU 0 (through knobs.cudaDriver), or nullopt without one.
std::optional<std::string> defaultArchOfPresentGpu(const Knobs &knobs) noexcept;
// Copies the SM count and opt-in shared memory of GPU 0 into `target`;
// leaves it unchanged without a GPU.
void applyPresentGpu(const Knobs &knobs, Target &target) noexcept;
// The target of a run on the GPU present: `archFlag`, else MOEJIT_ARCH (knobs.arch), else
// the arch of the GPU present, else sm_90a; the SM count and opt-in shared
// memory of the GPU present when there is one, whatever the arch (the
// kernels run on it). Throws std::invalid_argument
// for an unknown arch.
Target runTarget(const std::string &archFlag, const Knobs &knobs);

// A few lines for `moejit info` ("GPU: ..." or why there is none).
std::string describeGpu(const Knobs &knobs) noexcept;

} // namespace moejit
