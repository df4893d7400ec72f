// Launch geometry of the portable path: pure functions, checked on the CPU.
#include "moejit/problem.h"

#include <gtest/gtest.h>

namespace moejit {
namespace {

GemmProblem varlenMProblem() {
  GemmProblem p;
  p.varlen = Varlen::M;
  p.experts = 8;
  p.n = 2048;
  p.k = 768;
  p.schedule.tile = {128, 128, 64};
  p.schedule.stages = 4;
  return p;
}

TEST(PortableWarpLayout, SplitsLargeTilesIntoWarpBlocksOf64) {
  Schedule s;
  s.tile = {128, 128, 64};
  EXPECT_EQ(portableWarpLayout(s).m, 2);
  EXPECT_EQ(portableWarpLayout(s).n, 2);
  EXPECT_EQ(portableThreads(s), 128);
  s.tile = {256, 128, 64};
  EXPECT_EQ(portableWarpLayout(s).m, 4);
  s.tile = {64, 32, 32};
  EXPECT_EQ(portableWarpLayout(s).m, 2);
  EXPECT_EQ(portableWarpLayout(s).n, 1);
  s.tile = {16, 48, 32};
  EXPECT_EQ(portableThreads(s), 32);
}

TEST(PipelineSharedBytes, CountsPaddedTilesPerStage) {
  GemmProblem p = varlenMProblem();
  // A [128][64 + 8], B [64][128 + 8], bf16, 4 stages.
  EXPECT_EQ(pipelineSharedBytes(p), 4 * (128 * 72 + 64 * 136) * 2);
  p.bKContiguous = true; // B [128][64 + 8]
  EXPECT_EQ(pipelineSharedBytes(p), 4 * (128 * 72 + 128 * 72) * 2);
}

TEST(LaunchShape, VarlenMCoversEveryExpertTile) {
  const GemmProblem p = varlenMProblem();
  const LaunchShape shape = launchShape(p, 1000, Target{});
  EXPECT_EQ(shape.grid[0], 8u + 8u); // ceil(1000 / 128) + E
  EXPECT_EQ(shape.grid[1], 16u);
  EXPECT_EQ(shape.grid[2], 1u);
  EXPECT_EQ(shape.block[0], 128u);
  EXPECT_EQ(shape.sharedBytes, static_cast<unsigned>(pipelineSharedBytes(p)));
  // No rows: still a valid grid; every block exits.
  EXPECT_EQ(launchShape(p, 0, Target{}).grid[0], 8u);
}

TEST(LaunchShape, VarlenKGridsOverExperts) {
  GemmProblem p = varlenMProblem();
  p.varlen = Varlen::K;
  p.m = 768;
  p.k = 0;
  const LaunchShape shape = launchShape(p, 12345, Target{});
  EXPECT_EQ(shape.grid[0], 6u);
  EXPECT_EQ(shape.grid[1], 16u);
  EXPECT_EQ(shape.grid[2], 8u);
}

TEST(KernelPath, PortableEverywhereForNow) {
  EXPECT_EQ(selectKernelPath(varlenMProblem(), Target::fromArch("sm_90a")),
            KernelPath::Portable);
}

} // namespace
} // namespace moejit
