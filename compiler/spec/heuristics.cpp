// The schedule heuristic: a pure function from (layer, GEMM kind, target) to a
// complete Schedule. Documented in docs/schedules.md; unit-tested on the CPU.
#include "moejit/dsl.h"
#include "moejit/problem.h"

#include <algorithm>

namespace moejit {
namespace {

int64_t roundUp(int64_t value, int64_t multiple) {
  return (value + multiple - 1) / multiple * multiple;
}

// The GEMM as the kernels see it, with the default schedule's fields unset:
// its fixed extents (varlen-K: M and N are fixed and the reduction length
// is a run-time value; varlen-M: N and K) and its epilogue.
GemmProblem probeProblem(const LayerSpec &layer, GemmKind kind) {
  GemmSpec probe;
  probe.kind = kind;
  return makeGemmProblem(layer, probe);
}

} // namespace

Schedule defaultSchedule(const LayerSpec &layer, GemmKind kind, const Target &target) {
  const GemmProblem p = probeProblem(layer, kind);
  Schedule s;

  // The Hopper path (wgmma) takes varlen-M GEMMs on sm_90a whose tile suits
  // it (selectKernelPath: M 64 or 128, N up to 256, K one 128-byte row);
  // everything else runs the portable mma.sync path, tuned on an H100
  // (bench/NOTES.md): 8 warps of 64 x 64, a 128 x 256 x 64 tile, except
  // 256 x 128 for the gated up-projection and for weight gradients whose B
  // rows are scaled in shared memory (half the scaling work per stage).
  // The gated up-projection takes the Hopper path too since its B tile is
  // gate and up halves loaded by TMA: on an H100 at T = 32768, 128 x 256
  // there ran at 478 and 423 TFLOP/s for Qwen3-30B-A3B and the fine-grained
  // 7B layer, the portable 256 x 128 tile at 254 and 234.
  const bool gatedForward = p.epilogue == Epilogue::ActForward &&
                            (p.activation == Activation::SwiGLU ||
                             p.activation == Activation::GeGLU);
  const bool wgmmaPath = target.hasWgmma() && p.varlen == Varlen::M;
  const bool tallTile = !wgmmaPath && (gatedForward || p.scaleBRows);

  // M: 128 (256 for a tall tile) rows. A fixed M (varlen-K weight gradients)
  // smaller than that gets a smaller tile (a multiple of 64 for wgmma
  // targets, 16 before).
  const int mGranule = target.hasWgmma() ? 64 : 16;
  const int tileM = tallTile ? 256 : 128;
  s.tile.m = tileM;
  // Past 64 rows the height is a multiple of 64: warps take 64 rows each.
  if (p.m > 0 && p.m < tileM) {
    int64_t height = roundUp(p.m, mGranule);
    if (height > 64)
      height = roundUp(height, 64);
    s.tile.m = static_cast<int>(std::min<int64_t>(tileM, height));
  }

  // N: 256 (128 for a tall tile), or the whole N rounded up to 16 when
  // smaller (16 keeps the gate/up column pairs of the activation epilogue in
  // one tile).
  // A width over 64 is rounded up further, to 64 and past 128 to 128, so
  // that the portable path's warps split it (hidden = 200 made a 208-wide
  // tile that no warp layout divides).
  const int tileN = tallTile ? 128 : 256;
  int64_t width = roundUp(p.n, 16);
  if (width > 64)
    width = roundUp(width, 64);
  if (width > 128)
    width = roundUp(width, 128);
  s.tile.n = static_cast<int>(std::min<int64_t>(tileN, width));

  // K: 64 (four k16 steps per stage; one 128-byte row of bf16 for wgmma),
  // 32 for scaled B rows or when the fixed K is that short.
  s.tile.k = (p.scaleBRows || (p.k > 0 && p.k <= 32)) ? 32 : 64;

  // Single CTAs. A 2x1 cluster (B shared by TMA multicast) gained up to 9%
  // while the epilogue's half-sector stores filled L2; with whole-sector
  // stores it is 0-3% slower on an H100 (bench/HOPPER_NOTES.md, steps 5, 7).
  s.cluster = {1, 1};
  s.warpgroups = WarpgroupMode::Cooperative;
  // Raster: N tiles fastest (the CTAs sharing a gathered A tile run
  // together), except on the Hopper path for 64 or more N tiles, where that
  // streams an expert's whole B from DRAM for every M tile: bands of M tiles,
  // M fastest inside a band (Mixtral's up_proj, 112 N tiles: 409 -> 596
  // TFLOP/s; with bands from 16 N tiles its down_proj lost 27%).
  constexpr int64_t kBandMinNTiles = 64;
  // (An invalid layer may give N = 0 and a zero tile: the checker reports it.)
  const int64_t nTiles = s.tile.n > 0 ? (p.n + s.tile.n - 1) / s.tile.n : 0;
  s.raster = wgmmaPath && nTiles >= kBandMinNTiles ? Raster::AlongM : Raster::AlongN;
  s.persistent = false;
  // Direct epilogue stores: the TMA-store epilogue (stores = tma) is built
  // and checked on the CPU but not yet measured on a GPU
  // (bench/HOPPER_NOTES.md, step 22).
  s.stores = StoreMode::Direct;

  // Stages: as deep as shared memory allows, up to 4 (a fifth stage bought
  // nothing on an H100). If two stages of the tile do not fit (sm_86/89
  // have 99 KiB), K halves to 32 first. The Hopper path takes 3 for a long
  // fixed K (4096 and more): on an H100 (bench/HOPPER_NOTES.md, step 11)
  // Mixtral's down_proj (K 14336) ran 515 -> 680 TFLOP/s, dx (K 28672)
  // 382 -> 615, dh (K 4096) 315 -> 396 and DeepSeek-V3's up_proj and dh
  // (K 7168) +10-13%, while GEMMs of K 2048 and less lost up to 14% (Qwen3
  // up_proj 671 -> 588, the 7B down_proj 452 -> 380).
  constexpr int64_t kLongK = 4096;
  const int maxStages = wgmmaPath && p.k >= kLongK ? 3 : 4;
  auto fits = [&](const Schedule &candidate) {
    return pipelineSharedBytes(makeGemmProblem(layer, GemmSpec{kind, candidate})) <=
           target.maxSharedBytesPerBlock;
  };
  for (;;) {
    for (int stages = maxStages; stages >= 2; --stages) {
      Schedule candidate = s;
      candidate.stages = stages;
      if (fits(candidate))
        return candidate;
    }
    if (s.tile.k <= 32)
      break;
    s.tile.k = 32;
  }
  s.stages = 2;
  return s;
}

Schedule applyPatch(const Schedule &base, const SchedulePatch &patch) {
  Schedule s = base;
  if (patch.tile)
    s.tile = *patch.tile;
  if (patch.stages)
    s.stages = *patch.stages;
  if (patch.cluster)
    s.cluster = *patch.cluster;
  if (patch.warpgroups)
    s.warpgroups = *patch.warpgroups;
  if (patch.raster)
    s.raster = *patch.raster;
  if (patch.persistent)
    s.persistent = *patch.persistent;
  if (patch.stores)
    s.stores = *patch.stores;
  return s;
}

} // namespace moejit
