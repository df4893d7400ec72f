#include "moejit/error.h"
#include "runtime/src/cuda_driver.h"
#include "runtime/src/device.h"
#include "runtime/src/driver_info.h"

#include <gtest/gtest.h>

namespace moejit {
namespace {

constexpr const char *kMissingDriver = "libcuda-that-does-not-exist.so.1";

TEST(CudaDriver, MissingLibraryIsAClearNoGpuError) {
  try {
    CudaDriver::load(kMissingDriver);
    FAIL() << "loading a missing driver library succeeded";
  } catch (const Error &e) {
    EXPECT_EQ(e.kind(), ErrorKind::NoGpu);
    const std::string message = e.what();
    EXPECT_NE(message.find("no CUDA driver"), std::string::npos) << message;
    EXPECT_NE(message.find(kMissingDriver), std::string::npos) << message;
    EXPECT_NE(message.find("needs an NVIDIA GPU to run"), std::string::npos) << message;
  }
}

TEST(CudaDriver, GpuWithoutDriverThrowsNoGpu) {
  try {
    Gpu gpu(kMissingDriver);
    FAIL() << "opening a GPU without a driver succeeded";
  } catch (const Error &e) {
    EXPECT_EQ(e.kind(), ErrorKind::NoGpu);
  }
}

TEST(GpuInfo, NeverThrowsAndSaysWhy) {
  const GpuInfo info = queryGpuInfo(kMissingDriver);
  EXPECT_FALSE(info.driverLoaded);
  EXPECT_FALSE(info.gpuPresent);
  EXPECT_NE(info.problem.find("no CUDA driver"), std::string::npos) << info.problem;
  Knobs knobs;
  knobs.cudaDriver = kMissingDriver;
  EXPECT_NE(describeGpu(knobs).find("CUDA driver: none"), std::string::npos);
  EXPECT_FALSE(defaultArchOfPresentGpu(knobs).has_value());
  Target target = Target::fromArch("sm_80");
  const Target before = target;
  applyPresentGpu(knobs, target);
  EXPECT_EQ(target, before);
}

TEST(GpuInfo, ArchOfComputeCapability) {
  EXPECT_EQ(archForComputeCapability(9, 0), "sm_90a");
  EXPECT_EQ(archForComputeCapability(8, 0), "sm_80");
  EXPECT_EQ(archForComputeCapability(8, 9), "sm_89");
}

TEST(GpuInfo, RunTargetWithoutGpuDefaultsToHopper) {
  Knobs knobs;
  knobs.cudaDriver = kMissingDriver;
  EXPECT_EQ(runTarget("", knobs).arch, "sm_90a");
  EXPECT_EQ(runTarget("sm_80", knobs).arch, "sm_80");
  knobs.arch = "sm_86";
  EXPECT_EQ(runTarget("", knobs).arch, "sm_86");
  EXPECT_THROW(runTarget("sm_7x", knobs), std::invalid_argument);
}

} // namespace
} // namespace moejit
