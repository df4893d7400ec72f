#include "moejit/problem.h"
#include "tests/unit/schedule/test_layers.h"

#include <gtest/gtest.h>

#include <set>

namespace moejit {
namespace {

GemmProblem problemOf(const LayerSpec &layer, GemmKind kind) {
  return makeGemmProblem(layer, GemmSpec{kind, {}});
}

TEST(MakeGemmProblem, Qwen3ShapesFollowTheAbiTable) {
  const LayerSpec l = testing::qwen3(); // d 2048, n 768, gated: u 1536
  GemmProblem up = problemOf(l, GemmKind::UpProj);
  EXPECT_EQ(up.varlen, Varlen::M);
  EXPECT_EQ(up.n, 1536);
  EXPECT_EQ(up.k, 2048);
  EXPECT_TRUE(up.gatherA);
  EXPECT_EQ(up.epilogue, Epilogue::ActForward);
  EXPECT_EQ(up.auxColumns, 768);

  GemmProblem down = problemOf(l, GemmKind::DownProj);
  EXPECT_EQ(down.n, 2048);
  EXPECT_EQ(down.k, 768);
  EXPECT_EQ(down.epilogue, Epilogue::ScaleRows);
  EXPECT_FALSE(down.gatherA);

  GemmProblem dh = problemOf(l, GemmKind::DH);
  EXPECT_EQ(dh.n, 768);
  EXPECT_EQ(dh.k, 2048);
  EXPECT_TRUE(dh.bKContiguous);
  EXPECT_EQ(dh.cColumns, 1536);
  EXPECT_EQ(dh.epilogue, Epilogue::DActivation);

  GemmProblem dw2 = problemOf(l, GemmKind::DW2);
  EXPECT_EQ(dw2.varlen, Varlen::K);
  EXPECT_EQ(dw2.m, 768);
  EXPECT_EQ(dw2.n, 2048);
  EXPECT_EQ(dw2.k, 0);
  EXPECT_TRUE(dw2.gatherB);
  EXPECT_TRUE(dw2.scaleBRows);
  EXPECT_FALSE(dw2.aKContiguous);

  GemmProblem dw1 = problemOf(l, GemmKind::DW1);
  EXPECT_EQ(dw1.m, 2048);
  EXPECT_EQ(dw1.n, 1536);
  EXPECT_TRUE(dw1.gatherA);
  EXPECT_FALSE(dw1.gatherB);

  GemmProblem dx = problemOf(l, GemmKind::DX);
  EXPECT_EQ(dx.n, 2048);
  EXPECT_EQ(dx.k, 1536);
  EXPECT_TRUE(dx.bKContiguous);
}

TEST(MakeGemmProblem, UngatedActivationHasNarrowUpProjection) {
  const LayerSpec l = testing::makeLayer("relu", 256, 128, 8, 2, Activation::ReLU);
  EXPECT_EQ(problemOf(l, GemmKind::UpProj).n, 128);
  EXPECT_EQ(problemOf(l, GemmKind::DX).k, 128);
  const LayerSpec none = testing::makeLayer("none", 256, 128, 8, 2, Activation::None);
  EXPECT_EQ(problemOf(none, GemmKind::UpProj).epilogue, Epilogue::Store);
}

TEST(MakeGemmProblem, KernelNamesAreDistinctPerKind) {
  const LayerSpec l = testing::qwen3();
  std::set<std::string> names;
  for (GemmKind kind : kAllGemmKinds)
    names.insert(problemOf(l, kind).kernelName);
  EXPECT_EQ(names.size(), std::size(kAllGemmKinds));
  EXPECT_EQ(problemOf(l, GemmKind::UpProj).kernelName, "moejit_qwen3_up_proj");
}

TEST(LaunchShape, NeverDependsOnTokenCountForCompile) {
  // The same problem launches any row count: grids grow, the kernel is one.
  const LayerSpec l = testing::qwen3();
  const Target t = Target::fromArch("sm_90a");
  GemmSpec gemm{GemmKind::UpProj, {}};
  gemm.schedule.tile = {128, 128, 64};
  gemm.schedule.stages = 3;
  const GemmProblem p = makeGemmProblem(l, gemm);
  const LaunchShape small = launchShape(p, 1, t);
  const LaunchShape big = launchShape(p, 32768 * 8, t);
  EXPECT_EQ(small.block, big.block);
  EXPECT_EQ(small.sharedBytes, big.sharedBytes);
  EXPECT_GE(uint64_t(big.grid[0]) * big.grid[1] * big.grid[2],
            uint64_t(small.grid[0]) * small.grid[1] * small.grid[2]);
}

} // namespace
} // namespace moejit
