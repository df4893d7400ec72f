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

TEST(PortableWarpLayout, EightWarpsOfAtMost64x64) {
  Schedule s;
  s.tile = {128, 256, 32}; // 2 x 4 warps of 64 x 64
  EXPECT_EQ(portableWarpLayout(s).m, 2);
  EXPECT_EQ(portableWarpLayout(s).n, 4);
  EXPECT_EQ(portableThreads(s), 256);
  s.tile = {128, 128, 64}; // 2 x 4 warps of 64 x 32
  EXPECT_EQ(portableWarpLayout(s).m, 2);
  EXPECT_EQ(portableWarpLayout(s).n, 4);
  s.tile = {256, 128, 64}; // 4 x 2 warps of 64 x 64
  EXPECT_EQ(portableWarpLayout(s).m, 4);
  EXPECT_EQ(portableWarpLayout(s).n, 2);
  s.tile = {64, 32, 32}; // one warp: N pieces stay at least 32 wide
  EXPECT_EQ(portableWarpLayout(s).m, 1);
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

TEST(LaunchShape, VarlenMCoversEveryExpertTileWithNTilesFastest) {
  const GemmProblem p = varlenMProblem();
  // sm_80: the portable path (sm_90a may take the Hopper path).
  const Target target = Target::fromArch("sm_80");
  const LaunchShape shape = launchShape(p, 1000, target);
  // (ceil(1000 / 128) + E) slots times 2048 / 128 N tiles, in block x.
  EXPECT_EQ(shape.grid[0], (8u + 8u) * 16u);
  EXPECT_EQ(shape.grid[1], 1u);
  EXPECT_EQ(shape.grid[2], 1u);
  EXPECT_EQ(shape.block[0], 256u);
  EXPECT_EQ(shape.sharedBytes, static_cast<unsigned>(pipelineSharedBytes(p)));
  // No rows: still a valid grid; every block exits.
  EXPECT_EQ(launchShape(p, 0, target).grid[0], 8u * 16u);
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

TEST(KernelPath, HopperForVarlenMOnSm90a) {
  const GemmProblem p = varlenMProblem();
  EXPECT_EQ(selectKernelPath(p, Target::fromArch("sm_90a")), KernelPath::Hopper);
  EXPECT_EQ(selectKernelPath(p, Target::fromArch("sm_90")), KernelPath::Portable);
  EXPECT_EQ(selectKernelPath(p, Target::fromArch("sm_80")), KernelPath::Portable);
  Target sm90a = Target::fromArch("sm_90a");
  const LaunchShape shape = launchShape(p, 1000, sm90a);
  // A producer warpgroup and two consumer warpgroups for 128 rows.
  EXPECT_EQ(shape.block[0], 384u);
  // Four stages of A and B tiles, two 8-byte mbarriers per stage, two turn
  // mbarriers, the experts' offsets, the slack for the 1024-byte alignment.
  EXPECT_EQ(shape.sharedBytes, 4u * ((128 + 128) * 128 + 16) + 16 + (p.experts + 1) * 4 + 1024);
  // Persistent: (8 + 8) * 16 work items on at most one CTA per SM.
  EXPECT_EQ(shape.grid[0], 132u);
  EXPECT_EQ(shape.grid[1], 1u);
  sm90a.smCount = 114;
  EXPECT_EQ(launchShape(p, 1000, sm90a).grid[0], 114u);
  // Fewer work items than SMs: one CTA per item.
  GemmProblem small = p;
  small.experts = 1;
  small.n = 256;
  EXPECT_EQ(launchShape(small, 100, sm90a).grid[0], 2u * 2u);
  GemmProblem oneConsumer = p;
  oneConsumer.schedule.tile.m = 64;
  EXPECT_EQ(launchShape(oneConsumer, 1000, sm90a).block[0], 256u);
}

TEST(WeightMap, BoxesMatchTheHopperStageLayout) {
  const Target sm90a = Target::fromArch("sm_90a");
  GemmProblem p = varlenMProblem(); // B [E][K][N]: N-contiguous
  p.schedule.tile = {128, 256, 64};
  ASSERT_TRUE(usesWeightTma(p, sm90a));
  WeightMapShape shape = weightMapShape(p);
  EXPECT_EQ(shape.dims, (std::array<uint64_t, 3>{2048, 768, 8}));
  EXPECT_EQ(shape.strideBytes, (std::array<uint64_t, 2>{2048 * 2, 768 * 2048 * 2}));
  // 64 columns (one 128-byte row) by tile.k rows: one load per 64 columns.
  EXPECT_EQ(shape.box, (std::array<uint32_t, 3>{64, 64, 1}));

  p.bKContiguous = true; // B [E][N][K]: one load of tile.n rows of K
  shape = weightMapShape(p);
  EXPECT_EQ(shape.dims, (std::array<uint64_t, 3>{768, 2048, 8}));
  EXPECT_EQ(shape.strideBytes, (std::array<uint64_t, 2>{768 * 2, 2048 * 768 * 2}));
  EXPECT_EQ(shape.box, (std::array<uint32_t, 3>{64, 256, 1}));

  // No TMA off the Hopper path. A gated forward with concatenated halves
  // loads its gate and up halves as boxes when they are whole 64-column
  // blocks (tile.n a multiple of 128).
  EXPECT_FALSE(usesWeightTma(p, Target::fromArch("sm_90")));
  GemmProblem gated = varlenMProblem();
  gated.epilogue = Epilogue::ActForward;
  gated.activation = Activation::SwiGLU;
  gated.gateUp = GateUpLayout::Concatenated;
  EXPECT_TRUE(usesWeightTma(gated, sm90a));
  gated.schedule.tile.n = 192;
  EXPECT_FALSE(usesWeightTma(gated, sm90a));
  gated.gateUp = GateUpLayout::Interleaved;
  EXPECT_TRUE(usesWeightTma(gated, sm90a));
}

TEST(ActivationMap, OneBoxOfTileRowsPerStageForContiguousRows) {
  const Target sm90a = Target::fromArch("sm_90a");
  GemmProblem p = varlenMProblem(); // K = 768, contiguous A
  p.schedule.tile = {128, 256, 64};
  ASSERT_TRUE(usesActivationTma(p, sm90a));
  ActivationMapShape shape = activationMapShape(p, 5000);
  EXPECT_EQ(shape.dims, (std::array<uint64_t, 2>{768, 5000}));
  EXPECT_EQ(shape.strideBytes, 768u * 2);
  // One 128-byte row of K by tile.m rows: the whole A part of a stage.
  EXPECT_EQ(shape.box, (std::array<uint32_t, 2>{64, 128}));
  // A map always has a row, even for a launch of none.
  EXPECT_EQ(activationMapShape(p, 0).dims[1], 1u);
  p.schedule.tile.m = 64;
  EXPECT_EQ(activationMapShape(p, 5000).box, (std::array<uint32_t, 2>{64, 64}));

  // Gathered rows go by cp.async, and nothing but the Hopper path uses TMA.
  GemmProblem gathered = p;
  gathered.gatherA = true;
  EXPECT_FALSE(usesActivationTma(gathered, sm90a));
  EXPECT_FALSE(usesActivationTma(p, Target::fromArch("sm_90")));
}

TEST(OutputTma, FullTilesOfPlainScaledAndGatedStoresGoByTma) {
  const Target sm90a = Target::fromArch("sm_90a");
  GemmProblem p = varlenMProblem(); // N = 2048, K = 768
  p.schedule.tile = {128, 256, 64};
  p.cColumns = p.n;
  p.epilogue = Epilogue::ScaleRows;
  // Only where the schedule asks for it.
  EXPECT_FALSE(usesOutputTma(p, sm90a));
  GemmProblem directStores = p;
  p.schedule.stores = StoreMode::Tma;
  ASSERT_TRUE(usesOutputTma(p, sm90a));
  EXPECT_EQ(hopperSharedBytes(p, sm90a),
            hopperSharedBytes(directStores, sm90a) + hopperStagingBytes(p));
  // Two 8 KiB buffers per consumer warpgroup beside the four stages.
  EXPECT_EQ(hopperStagingBytes(p), 2 * 2 * 64 * 128);
  GemmProblem direct = p;
  direct.epilogue = Epilogue::DActivation;
  EXPECT_FALSE(usesOutputTma(direct, sm90a));
  EXPECT_EQ(hopperSharedBytes(p, sm90a), hopperSharedBytes(direct, sm90a) + hopperStagingBytes(p));
  EXPECT_LE(hopperSharedBytes(p, sm90a), sm90a.maxSharedBytesPerBlock);
  OutputMapShape shape = outputMapShape(p, 5000, /*aux=*/false);
  EXPECT_EQ(shape.dims, (std::array<uint64_t, 2>{2048, 5000}));
  EXPECT_EQ(shape.strideBytes, 2048u * 2);
  EXPECT_EQ(shape.box, (std::array<uint32_t, 2>{64, 64}));
  EXPECT_EQ(outputMapShape(p, 0, false).dims[1], 1u);
  // Not on the portable path, and not for ping-pong consumers.
  EXPECT_FALSE(usesOutputTma(p, Target::fromArch("sm_90")));
  GemmProblem pingPong = p;
  pingPong.schedule.tile = {64, 256, 64};
  pingPong.schedule.warpgroups = WarpgroupMode::PingPong;
  EXPECT_FALSE(usesOutputTma(pingPong, sm90a));

  // The gated forward: H and act(H) boxes when every half of a tile stays in
  // one half of H (N / 2 a multiple of tile.n / 2), concatenated halves only.
  GemmProblem gated = p;
  gated.epilogue = Epilogue::ActForward;
  gated.activation = Activation::SwiGLU;
  gated.gateUp = GateUpLayout::Concatenated;
  gated.n = 1536;
  gated.cColumns = 1536;
  gated.auxColumns = 768;
  EXPECT_TRUE(usesOutputTma(gated, sm90a));
  EXPECT_EQ(outputMapShape(gated, 100, /*aux=*/true).dims, (std::array<uint64_t, 2>{768, 100}));
  gated.n = gated.cColumns = 2880; // 1440 is not a multiple of 128
  EXPECT_FALSE(usesOutputTma(gated, sm90a));
  gated.n = gated.cColumns = 1536;
  gated.gateUp = GateUpLayout::Interleaved;
  EXPECT_FALSE(usesOutputTma(gated, sm90a));
  gated.gateUp = GateUpLayout::Concatenated;
  gated.activation = Activation::ReLU;
  EXPECT_FALSE(usesOutputTma(gated, sm90a));

  // Where the staging does not fit beside the stages, the stores stay
  // direct and the stages keep their room.
  GemmProblem tight = p;
  tight.experts = 8192; // 32 KiB of expert offsets
  EXPECT_FALSE(hopperTmaStores(tight, sm90a));
  EXPECT_EQ(hopperSharedBytes(tight, sm90a), hopperSharedBytes(direct, sm90a) + (8192 - 8) * 4);
  EXPECT_EQ(selectKernelPath(tight, sm90a), KernelPath::Hopper);
  // The same on a target with less shared memory: the kernel keeps the
  // Hopper path with direct stores.
  Target small = sm90a;
  small.maxSharedBytesPerBlock = static_cast<int>(hopperSharedBytes(direct, sm90a));
  EXPECT_FALSE(usesOutputTma(p, small));
  EXPECT_EQ(selectKernelPath(p, small), KernelPath::Hopper);
}

TEST(Cluster, PairsShareTheWeightTileOnTheHopperPath) {
  Target sm90a = Target::fromArch("sm_90a");
  GemmProblem p = varlenMProblem(); // N-contiguous B, tile.n 128: two boxes
  p.schedule.cluster = {2, 1};
  EXPECT_EQ(hopperClusterSize(p, sm90a), 2);
  // The portable path ignores the cluster.
  EXPECT_EQ(hopperClusterSize(p, Target::fromArch("sm_90")), 1);
  // Four CTAs cannot split two 64-column boxes; clusters along N are not
  // built.
  p.schedule.cluster = {4, 1};
  EXPECT_EQ(hopperClusterSize(p, sm90a), 1);
  p.schedule.cluster = {1, 2};
  EXPECT_EQ(hopperClusterSize(p, sm90a), 1);

  // A cluster of 2 walks tiles of 2 x tile.m rows: at most
  // ceil(R / 256) + E of them per N tile, on at most smCount / 2 clusters;
  // the grid is whole clusters and the launch may shrink it further.
  p.schedule.cluster = {2, 1};
  sm90a.smCount = 133;
  LaunchShape shape = launchShape(p, 1000, sm90a);
  EXPECT_EQ(shape.cluster, 2u);
  EXPECT_TRUE(shape.persistent);
  EXPECT_EQ(shape.grid[0], 132u);
  GemmProblem small = p;
  small.experts = 1;
  small.n = 128;
  EXPECT_EQ(launchShape(small, 300, sm90a).grid[0], 2u * 3u);
  // The portable path is neither clustered nor persistent.
  shape = launchShape(p, 1000, Target::fromArch("sm_90"));
  EXPECT_EQ(shape.cluster, 1u);
  EXPECT_FALSE(shape.persistent);

  // K-contiguous B: each CTA loads its half of the tile.n rows.
  p.bKContiguous = true;
  p.schedule.tile.n = 256;
  EXPECT_EQ(weightMapShape(p).box, (std::array<uint32_t, 3>{64, 128, 1}));
  p.schedule.cluster = {4, 1};
  EXPECT_EQ(weightMapShape(p).box, (std::array<uint32_t, 3>{64, 64, 1}));
}

TEST(KernelPath, PortableWhereWgmmaDoesNotFit) {
  const Target hopper = Target::fromArch("sm_90a");
  GemmProblem varlenK = varlenMProblem();
  varlenK.varlen = Varlen::K;
  varlenK.aKContiguous = false;
  EXPECT_EQ(selectKernelPath(varlenK, hopper), KernelPath::Portable);
  GemmProblem narrowN = varlenMProblem();
  narrowN.schedule.tile.n = 96;
  EXPECT_EQ(selectKernelPath(narrowN, hopper), KernelPath::Portable);
  GemmProblem shortK = varlenMProblem();
  shortK.schedule.tile.k = 32;
  EXPECT_EQ(selectKernelPath(shortK, hopper), KernelPath::Portable);
  GemmProblem twoStages = varlenMProblem();
  twoStages.schedule.stages = 2;
  EXPECT_EQ(selectKernelPath(twoStages, hopper), KernelPath::Portable);
}

} // namespace
} // namespace moejit
