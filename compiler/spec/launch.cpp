// Launch geometry of the grouped-GEMM kernels: pure functions of the problem,
// shared by the compiler (which bakes them into the kernel) and the runtime.
#include "moejit/problem.h"

#include <algorithm>

namespace moejit {
namespace {

constexpr int64_t kWarpSize = 32;
constexpr int64_t kWarpgroupThreads = 128;
constexpr int kWgmmaM = 64, kWgmmaMaxN = 256;
// Padding of the inner (contiguous) dimension of the shared-memory tiles.
constexpr int64_t kSharedPadElements = 8;

int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Warp tiles are at most 64 x 64 (128 fp32 accumulators per thread) and a
// block has up to 8 warps: two per SM sub-partition, so that one warp's
// ldmatrix and cp.async latency hides behind the other's mma.sync. Along M a
// warp takes 64 rows (fewer for a short tile, at least 16); along N the
// remaining warps split the tile into pieces of at least 32 columns.
constexpr int kMaxWarps = 8;
constexpr int kWarpTileM = 64;
constexpr int kMinWarpTileN = 32;

int warpsAlongM(int tileM) {
  if (tileM % kWarpTileM == 0)
    return std::min(tileM / kWarpTileM, kMaxWarps);
  return 1;
}

int warpsAlongN(int tileN, int warpsM) {
  int warps = 1;
  while (warps * 2 * warpsM <= kMaxWarps && tileN % (warps * 2 * 16) == 0 &&
         tileN / (warps * 2) >= kMinWarpTileN)
    warps *= 2;
  return warps;
}

} // namespace

HopperTileLayout hopperTileLayout(const TileShape &tile) {
  HopperTileLayout layout;
  layout.aStageBytes = tile.m * HopperTileLayout::kRowBytes;
  layout.bStageBytes = tile.n * HopperTileLayout::kRowBytes;
  return layout;
}

// Each ping-pong consumer warpgroup owns whole tiles: 64 rows, or 128 (two
// m64 wgmmas per k16 step) when tile.n <= 128 keeps its accumulators at 128
// per thread.
bool hopperPingPong(const Schedule &schedule) {
  return schedule.warpgroups == WarpgroupMode::PingPong &&
         (schedule.tile.m == kWgmmaM || (schedule.tile.m == 2 * kWgmmaM && schedule.tile.n <= 128));
}

// Staggered: the cooperative kernel of a 128-row tile whose two consumer
// warpgroups take turns on the epilogue.
bool hopperStaggered(const Schedule &schedule) {
  return schedule.warpgroups == WarpgroupMode::Staggered && schedule.tile.m == 2 * kWgmmaM;
}

int hopperThreads(const Schedule &schedule) {
  if (hopperPingPong(schedule))
    return static_cast<int>(kWarpgroupThreads) * 3;
  // A producer warpgroup plus one consumer warpgroup per 64 rows.
  return static_cast<int>(kWarpgroupThreads) * (1 + schedule.tile.m / kWgmmaM);
}

namespace {

int64_t hopperBaseSharedBytes(const GemmProblem &problem) {
  const HopperTileLayout layout = hopperTileLayout(problem.schedule.tile);
  // Per stage: the A and B tiles and two 8-byte mbarriers (full, empty);
  // two mbarriers that order the ping-pong consumers' main loops; a copy of
  // the expert offsets (E + 1 int32).
  return problem.schedule.stages *
             (layout.aStageBytes + layout.bStageBytes + 2 * HopperTileLayout::kBarrierBytes) +
         2 * HopperTileLayout::kBarrierBytes + (problem.experts + 1) * 4 +
         HopperTileLayout::kAlignBytes;
}

// The epilogues whose full tiles go out as whole boxes: plain and scaled
// stores, and the gated forward with concatenated halves when every gate
// (and up) half of a tile lies inside one half of H (so a box of gate
// columns never reaches the up columns).
bool tmaStoreEpilogue(const GemmProblem &problem) {
  const Schedule &s = problem.schedule;
  if (s.stores != StoreMode::Tma || hopperPingPong(s) || hopperStaggered(s) ||
      dtypeBytes(problem.dtype) != 2)
    return false;
  switch (problem.epilogue) {
  case Epilogue::Store:
  case Epilogue::ScaleRows:
    return true;
  case Epilogue::ActForward:
    return (problem.activation == Activation::SwiGLU || problem.activation == Activation::GeGLU) &&
           problem.gateUp == GateUpLayout::Concatenated && s.tile.n % 128 == 0 &&
           (problem.n / 2) % (s.tile.n / 2) == 0;
  case Epilogue::DActivation:
    return false;
  }
  return false;
}

} // namespace

int64_t hopperStagingBytes(const GemmProblem &problem) {
  // One fills while the TMA unit reads the other.
  return problem.schedule.tile.m / kWgmmaM * HopperTileLayout::kStagingBuffers *
         HopperTileLayout::kStagingBufferBytes;
}

bool hopperTmaStores(const GemmProblem &problem, const Target &target) {
  return tmaStoreEpilogue(problem) &&
         hopperBaseSharedBytes(problem) + hopperStagingBytes(problem) <=
             target.maxSharedBytesPerBlock;
}

int64_t hopperSharedBytes(const GemmProblem &problem, const Target &target) {
  return hopperBaseSharedBytes(problem) +
         (hopperTmaStores(problem, target) ? hopperStagingBytes(problem) : 0);
}

KernelPath selectKernelPath(const GemmProblem &problem, const Target &target) {
  const Schedule &s = problem.schedule;
  // wgmma reads A from K-contiguous rows here; varlen-K families (A is
  // [K][M]) stay portable. A stage row is one 128-byte swizzle row, so
  // tile.k is 128 bytes; B blocks are 64 columns wide; the pipeline keeps
  // one stage for the copies in flight and one for the wgmma in flight.
  const bool fits = problem.varlen == Varlen::M && problem.aKContiguous &&
                    (s.tile.m == kWgmmaM || s.tile.m == 2 * kWgmmaM) &&
                    s.tile.k * dtypeBytes(problem.dtype) == HopperTileLayout::kRowBytes &&
                    s.tile.n % 64 == 0 && s.tile.n <= kWgmmaMaxN && s.stages >= 3 &&
                    hopperBaseSharedBytes(problem) <= target.maxSharedBytesPerBlock;
  return target.hasWgmma() && fits ? KernelPath::Hopper : KernelPath::Portable;
}

WarpLayout portableWarpLayout(const Schedule &schedule) {
  const int warpsM = warpsAlongM(schedule.tile.m);
  return {warpsM, warpsAlongN(schedule.tile.n, warpsM)};
}

PortableTileLayout portableTileLayout(const TileShape &tile, Varlen varlen,
                                      bool bKContiguous) {
  PortableTileLayout layout;
  if (varlen == Varlen::M) { // A is [M][K]
    layout.aOuter = tile.m;
    layout.aInner = tile.k + kSharedPadElements;
  } else { // A is [K][M]
    layout.aOuter = tile.k;
    layout.aInner = tile.m + kSharedPadElements;
  }
  if (bKContiguous) {
    layout.bOuter = tile.n;
    layout.bInner = tile.k + kSharedPadElements;
  } else {
    layout.bOuter = tile.k;
    layout.bInner = tile.n + kSharedPadElements;
  }
  return layout;
}

int portableThreads(const Schedule &schedule) {
  const WarpLayout warps = portableWarpLayout(schedule);
  return static_cast<int>(kWarpSize) * warps.m * warps.n;
}

int64_t pipelineSharedBytes(const GemmProblem &problem) {
  const PortableTileLayout layout = portableTileLayout(
      problem.schedule.tile, problem.varlen, problem.bKContiguous);
  return problem.schedule.stages * layout.stageElements() *
         dtypeBytes(problem.dtype);
}

bool usesWeightTma(const GemmProblem &problem, const Target &target) {
  // The Hopper kernel's B tile of a gated forward with concatenated halves
  // is tile.n / 2 gate columns then the same up columns: TMA boxes when
  // those are whole 64-column blocks of an N-contiguous B.
  const bool gateUpHalves = problem.epilogue == Epilogue::ActForward &&
                            (problem.activation == Activation::SwiGLU ||
                             problem.activation == Activation::GeGLU) &&
                            problem.gateUp == GateUpLayout::Concatenated;
  return selectKernelPath(problem, target) == KernelPath::Hopper &&
         weightTileIsBoxes(gateUpHalves, problem.bKContiguous, problem.schedule.tile.n);
}

bool weightTileIsBoxes(bool gateUpHalves, bool bKContiguous, int64_t tileN) {
  return !gateUpHalves || (!bKContiguous && tileN % 128 == 0);
}

int weightClusterParts(const GemmProblem &problem) {
  const ClusterShape &cluster = problem.schedule.cluster;
  const int64_t tileN = problem.schedule.tile.n;
  const int parts = cluster.m;
  if (cluster.n != 1 || (parts != 2 && parts != 4))
    return 1;
  constexpr int64_t kBoxColumns = 64, kSwizzleRows = 8;
  const bool splits = problem.bKContiguous ? tileN % (parts * kSwizzleRows) == 0
                                           : (tileN / kBoxColumns) % parts == 0;
  return splits ? parts : 1;
}

int hopperClusterSize(const GemmProblem &problem, const Target &target) {
  return usesWeightTma(problem, target) ? weightClusterParts(problem) : 1;
}

bool usesActivationTma(const GemmProblem &problem, const Target &target) {
  return selectKernelPath(problem, target) == KernelPath::Hopper && !problem.gatherA;
}

ActivationMapShape activationMapShape(const GemmProblem &problem, int64_t totalRows) {
  const uint64_t bytes = static_cast<uint64_t>(dtypeBytes(problem.dtype));
  const uint64_t k = static_cast<uint64_t>(problem.k);
  const uint32_t rowElements = static_cast<uint32_t>(HopperTileLayout::kRowBytes / bytes);
  ActivationMapShape shape;
  // A tensor map has at least one row, even for a launch of none.
  shape.dims = {k, static_cast<uint64_t>(std::max<int64_t>(totalRows, 1))};
  shape.strideBytes = k * bytes;
  shape.box = {rowElements, static_cast<uint32_t>(problem.schedule.tile.m)};
  return shape;
}

bool usesOutputTma(const GemmProblem &problem, const Target &target) {
  return selectKernelPath(problem, target) == KernelPath::Hopper &&
         hopperTmaStores(problem, target);
}

OutputMapShape outputMapShape(const GemmProblem &problem, int64_t totalRows, bool aux) {
  const uint64_t bytes = static_cast<uint64_t>(dtypeBytes(problem.dtype));
  const uint64_t columns = static_cast<uint64_t>(aux ? problem.auxColumns : problem.cColumns);
  OutputMapShape shape;
  shape.dims = {columns, static_cast<uint64_t>(std::max<int64_t>(totalRows, 1))};
  shape.strideBytes = columns * bytes;
  shape.box = {static_cast<uint32_t>(HopperTileLayout::kRowBytes / bytes),
               static_cast<uint32_t>(kWgmmaM)};
  return shape;
}

WeightMapShape weightMapShape(const GemmProblem &problem) {
  const uint64_t bytes = static_cast<uint64_t>(dtypeBytes(problem.dtype));
  const uint64_t n = static_cast<uint64_t>(problem.n), k = static_cast<uint64_t>(problem.k);
  const uint32_t rowElements = static_cast<uint32_t>(HopperTileLayout::kRowBytes / bytes);
  WeightMapShape shape;
  if (problem.bKContiguous) {
    shape.dims = {k, n, static_cast<uint64_t>(problem.experts)};
    shape.strideBytes = {k * bytes, n * k * bytes};
    // One box per CTA of the cluster: its part of the tile's N rows.
    shape.box = {rowElements,
                 static_cast<uint32_t>(problem.schedule.tile.n / weightClusterParts(problem)), 1};
  } else {
    shape.dims = {n, k, static_cast<uint64_t>(problem.experts)};
    shape.strideBytes = {n * bytes, k * n * bytes};
    shape.box = {rowElements, static_cast<uint32_t>(problem.schedule.tile.k), 1};
  }
  return shape;
}

LaunchShape launchShape(const GemmProblem &problem, int64_t totalRows,
                        const Target &target) {
  const TileShape &tile = problem.schedule.tile;
  LaunchShape shape;
  const bool hopper = selectKernelPath(problem, target) == KernelPath::Hopper;
  if (hopper) {
    shape.block = {static_cast<unsigned>(hopperThreads(problem.schedule)), 1, 1};
    shape.sharedBytes = static_cast<unsigned>(hopperSharedBytes(problem, target));
  } else {
    shape.block = {static_cast<unsigned>(portableThreads(problem.schedule)), 1, 1};
    shape.sharedBytes = static_cast<unsigned>(pipelineSharedBytes(problem));
  }
  const int64_t nTiles = ceilDiv(problem.n, tile.n);
  if (problem.varlen == Varlen::M) {
    // Each expert's rows start a new M tile, so the tiles over all experts
    // number at most ceil(R / tile.m) + E; the kernel exits surplus blocks.
    // One dimension, N tiles fastest: the kernel decodes block x. The
    // Hopper kernel is persistent: at most one CTA per SM, each cluster of
    // `cluster` CTAs looping over the work items (cluster tiles of
    // cluster * tile.m rows) cluster x, cluster x + clusters, ...
    const int64_t cluster = hopper ? hopperClusterSize(problem, target) : 1;
    const int64_t slots = ceilDiv(totalRows, tile.m * cluster) + problem.experts;
    int64_t blocks = slots * nTiles;
    if (hopper) {
      blocks = std::min<int64_t>(blocks, std::max<int64_t>(target.smCount / cluster, 1)) * cluster;
      shape.cluster = static_cast<unsigned>(cluster);
      shape.persistent = true;
    }
    shape.grid = {static_cast<unsigned>(blocks), 1, 1};
  } else {
    shape.grid = {static_cast<unsigned>(ceilDiv(problem.m, tile.m)),
                  static_cast<unsigned>(nTiles),
                  static_cast<unsigned>(problem.experts)};
  }
  return shape;
}

} // namespace moejit
