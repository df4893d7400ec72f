#include "moejit/dsl.h"
#include "moejit/problem.h"
#include "tests/unit/schedule/test_layers.h"

#include <gtest/gtest.h>

namespace moejit {
namespace {

using testing::deepseekV3;
using testing::makeLayer;
using testing::qwen3;
using testing::sonic7b;

TEST(DefaultSchedule, IsDeterministic) {
  const Target target = Target::fromArch("sm_90a");
  for (GemmKind kind : kAllGemmKinds)
    EXPECT_EQ(defaultSchedule(qwen3(), kind, target), defaultSchedule(qwen3(), kind, target));
}

TEST(DefaultSchedule, TilesAreLegalForEveryTarget) {
  for (const char *arch : {"sm_80", "sm_86", "sm_89", "sm_90a"}) {
    const Target target = Target::fromArch(arch);
    for (const LayerSpec &layer : {qwen3(), sonic7b(), deepseekV3()}) {
      for (GemmKind kind : kAllGemmKinds) {
        const Schedule s = defaultSchedule(layer, kind, target);
        SCOPED_TRACE(std::string(arch) + " " + layer.name + " " +
                     std::string(toString(kind)));
        EXPECT_EQ(s.tile.m % (target.hasWgmma() ? 64 : 16), 0);
        EXPECT_EQ(s.tile.n % 8, 0);
        EXPECT_LE(s.tile.n, 256);
        EXPECT_EQ(s.tile.k % 16, 0);
        EXPECT_GE(s.stages, 2);
        const GemmProblem p = makeGemmProblem(layer, GemmSpec{kind, s});
        EXPECT_LE(pipelineSharedBytes(p), target.maxSharedBytesPerBlock);
      }
    }
  }
}

TEST(DefaultSchedule, SmallNGetsANarrowTile) {
  // n = 48: the dh GEMM's N is n, so the tile shrinks to 48 rounded to 16.
  const LayerSpec layer = makeLayer("tiny", 64, 48, 4, 2);
  const Schedule s = defaultSchedule(layer, GemmKind::DH, Target::fromArch("sm_90a"));
  EXPECT_EQ(s.tile.n, 48);
  EXPECT_EQ(s.tile.k, 64);
}

TEST(DefaultSchedule, ShortFixedKGetsK32) {
  const LayerSpec layer = makeLayer("tiny", 32, 64, 4, 2);
  // up_proj reduces over d = 32.
  EXPECT_EQ(defaultSchedule(layer, GemmKind::UpProj, Target::fromArch("sm_80")).tile.k, 32);
}

TEST(DefaultSchedule, VarlenKWithSmallFixedMShrinksM) {
  // dw2's M is n = 48: on sm_80 the M tile becomes 48, on sm_90a 64.
  const LayerSpec layer = makeLayer("tiny", 64, 48, 4, 2);
  EXPECT_EQ(defaultSchedule(layer, GemmKind::DW2, Target::fromArch("sm_80")).tile.m, 48);
  EXPECT_EQ(defaultSchedule(layer, GemmKind::DW2, Target::fromArch("sm_90a")).tile.m, 64);
}

TEST(DefaultSchedule, FewerStagesWhenSharedMemoryIsSmall) {
  Target small = Target::fromArch("sm_90a");
  const Schedule roomy = defaultSchedule(qwen3(), GemmKind::UpProj, small);
  small.maxSharedBytesPerBlock = 48 * 1024;
  const Schedule tight = defaultSchedule(qwen3(), GemmKind::UpProj, small);
  EXPECT_LT(tight.stages, roomy.stages);
}

// Hopper GEMMs of a long fixed K take 3 stages, short ones 4
// (bench/HOPPER_NOTES.md, step 11).
TEST(DefaultSchedule, LongKTakesThreeStagesOnTheHopperPath) {
  const LayerSpec mixtral = makeLayer("mixtral", 4096, 14336, 8, 2);
  const Target sm90a = Target::fromArch("sm_90a");
  EXPECT_EQ(defaultSchedule(mixtral, GemmKind::DownProj, sm90a).stages, 3); // K 14336
  EXPECT_EQ(defaultSchedule(mixtral, GemmKind::DX, sm90a).stages, 3);       // K 28672
  EXPECT_EQ(defaultSchedule(mixtral, GemmKind::UpProj, sm90a).stages, 3);   // K 4096
  EXPECT_EQ(defaultSchedule(qwen3(), GemmKind::UpProj, sm90a).stages, 4);   // K 2048
  EXPECT_EQ(defaultSchedule(sonic7b(), GemmKind::DownProj, sm90a).stages, 4);
  // Not on the portable path, nor for the varlen-K weight gradients.
  EXPECT_EQ(defaultSchedule(mixtral, GemmKind::DownProj, Target::fromArch("sm_90")).stages, 4);
  EXPECT_EQ(defaultSchedule(mixtral, GemmKind::DW1, sm90a).stages, 4);
}

// N tiles fastest, except bands of M tiles on the Hopper path from 64 N tiles.
TEST(DefaultSchedule, RasterGoesAlongMOnlyForManyNTilesOnTheHopperPath) {
  const LayerSpec mixtral = makeLayer("mixtral", 4096, 14336, 8, 2);
  const Target sm90a = Target::fromArch("sm_90a");
  EXPECT_EQ(defaultSchedule(mixtral, GemmKind::UpProj, sm90a).raster, Raster::AlongM); // 112
  EXPECT_EQ(defaultSchedule(mixtral, GemmKind::DownProj, sm90a).raster, Raster::AlongN); // 16
  EXPECT_EQ(defaultSchedule(qwen3(), GemmKind::UpProj, sm90a).raster, Raster::AlongN);
  EXPECT_EQ(defaultSchedule(mixtral, GemmKind::UpProj, Target::fromArch("sm_80")).raster,
            Raster::AlongN);
}

// The portable path's tiles, measured best on an H100 (bench/NOTES.md).
TEST(DefaultSchedule, PortableTilesAre128x256WithTallTilesForUpProjAndDw2) {
  const Target sm80 = Target::fromArch("sm_80");
  const Schedule down = defaultSchedule(qwen3(), GemmKind::DownProj, sm80);
  EXPECT_EQ(down.tile, (TileShape{128, 256, 64}));
  EXPECT_EQ(defaultSchedule(qwen3(), GemmKind::DW1, sm80).tile, (TileShape{128, 256, 64}));
  // Gated up-projection: 256 x 128.
  EXPECT_EQ(defaultSchedule(qwen3(), GemmKind::UpProj, sm80).tile, (TileShape{256, 128, 64}));
  // dW2 scales its B rows in shared memory: 256 x 128 x 32.
  EXPECT_EQ(defaultSchedule(qwen3(), GemmKind::DW2, sm80).tile, (TileShape{256, 128, 32}));
  // 128 x 256 x 64 in bf16 fits three stages in sm_80's 163 KiB.
  EXPECT_EQ(down.stages, 3);
}

TEST(DefaultSchedule, WgmmaTargetsKeepVarlenMTilesWgmmaShaped) {
  const Target sm90 = Target::fromArch("sm_90a");
  for (GemmKind kind : {GemmKind::UpProj, GemmKind::DownProj, GemmKind::DH, GemmKind::DX}) {
    const Schedule s = defaultSchedule(qwen3(), kind, sm90);
    SCOPED_TRACE(std::string(toString(kind)));
    EXPECT_LE(s.tile.m, 128);
    EXPECT_EQ(s.tile.k, 64); // one 128-byte row of bf16
    EXPECT_GE(s.stages, 3);
  }
  // The gated up-projection takes 128 x 256 on the Hopper path (its gate and
  // up halves are whole 64-column TMA boxes); varlen-K stays portable with
  // its tuned tile.
  EXPECT_EQ(defaultSchedule(qwen3(), GemmKind::UpProj, sm90).tile, (TileShape{128, 256, 64}));
  EXPECT_EQ(defaultSchedule(qwen3(), GemmKind::DW2, sm90).tile, (TileShape{256, 128, 32}));
}

TEST(DefaultSchedule, SingleCtasByDefault) {
  // Clusters are opt-in (`cluster = 2x1`): measured no faster on an H100.
  const Target sm90a = Target::fromArch("sm_90a");
  for (GemmKind kind : kAllGemmKinds)
    EXPECT_EQ(defaultSchedule(qwen3(), kind, sm90a).cluster, (ClusterShape{1, 1}));
}

TEST(ApplyPatch, OverridesOnlyGivenFields) {
  const Schedule base = defaultSchedule(qwen3(), GemmKind::UpProj, Target::fromArch("sm_90a"));
  SchedulePatch patch;
  patch.stages = 2;
  patch.raster = Raster::AlongN;
  const Schedule s = applyPatch(base, patch);
  EXPECT_EQ(s.stages, 2);
  EXPECT_EQ(s.raster, Raster::AlongN);
  EXPECT_EQ(s.tile, base.tile);
  EXPECT_EQ(s.warpgroups, base.warpgroups);
  EXPECT_EQ(applyPatch(base, SchedulePatch{}), base);
}

} // namespace
} // namespace moejit
