// Launch geometry of the grouped-GEMM kernels: pure functions of the problem,
// shared by the compiler (which bakes them into the kernel) and the runtime.
#include "moejit/problem.h"

namespace moejit {
namespace {

constexpr int64_t kWarpSize = 32;
// Padding of the inner (contiguous) dimension of the shared-memory tiles.
constexpr int64_t kSharedPadElements = 8;

int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Warps along one tile dimension: 64-wide warp blocks when the tile splits
// into several, two halves for mid-size tiles, one warp otherwise.
int warpsAlong(int tileExtent) {
  if (tileExtent >= 128 && tileExtent % 64 == 0)
    return tileExtent / 64;
  if (tileExtent >= 64 && tileExtent % 32 == 0)
    return 2;
  return 1;
}

} // namespace

KernelPath selectKernelPath(const GemmProblem &, const Target &) {
  // The Hopper path is a later issue; every target runs the portable one.
  return KernelPath::Portable;
}

WarpLayout portableWarpLayout(const Schedule &schedule) {
  return {warpsAlong(schedule.tile.m), warpsAlong(schedule.tile.n)};
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

LaunchShape launchShape(const GemmProblem &problem, int64_t totalRows,
                        const Target &) {
  const TileShape &tile = problem.schedule.tile;
  LaunchShape shape;
  shape.block = {static_cast<unsigned>(portableThreads(problem.schedule)), 1, 1};
  shape.sharedBytes = static_cast<unsigned>(pipelineSharedBytes(problem));
  const auto nTiles = static_cast<unsigned>(ceilDiv(problem.n, tile.n));
  if (problem.varlen == Varlen::M) {
    // Each expert's rows start a new M tile, so the tiles over all experts
    // number at most ceil(R / tile.m) + E; the kernel exits surplus blocks.
    const int64_t slots = ceilDiv(totalRows, tile.m) + problem.experts;
    shape.grid = {static_cast<unsigned>(slots), nTiles, 1};
  } else {
    shape.grid = {static_cast<unsigned>(ceilDiv(problem.m, tile.m)), nTiles,
                  static_cast<unsigned>(problem.experts)};
  }
  return shape;
}

} // namespace moejit
