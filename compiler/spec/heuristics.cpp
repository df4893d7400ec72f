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

// The fixed extents of the GEMM's N and K (varlen-K: M and N are fixed and
// the reduction length is a run-time value).
struct FixedExtents {
  int64_t m = 0; // 0 when M is the run-time dimension
  int64_t n = 0;
  int64_t k = 0; // 0 when K is the run-time dimension
};

FixedExtents fixedExtents(const LayerSpec &layer, GemmKind kind) {
  GemmSpec probe;
  probe.kind = kind;
  const GemmProblem p = makeGemmProblem(layer, probe);
  return {p.m, p.n, p.k};
}

} // namespace

Schedule defaultSchedule(const LayerSpec &layer, GemmKind kind, const Target &target) {
  const FixedExtents ext = fixedExtents(layer, kind);
  Schedule s;

  // M: 128 rows per tile. Varlen-M experts usually hold hundreds of rows at
  // training sizes; Hopper's wgmma wants a multiple of 64 anyway. A fixed M
  // (varlen-K weight gradients) smaller than 128 gets a smaller tile.
  const int mGranule = target.hasWgmma() ? 64 : 16;
  s.tile.m = 128;
  if (ext.m > 0 && ext.m < 128)
    s.tile.m = static_cast<int>(roundUp(ext.m, mGranule));

  // N: 128 columns, or the whole N rounded to 16 when N is smaller (16 keeps
  // the gate/up column pairs of the activation epilogue in one tile).
  s.tile.n = static_cast<int>(std::min<int64_t>(128, roundUp(ext.n, 16)));

  // K: 64 (four k16 steps per stage); 32 when the fixed K is that short.
  s.tile.k = (ext.k > 0 && ext.k <= 32) ? 32 : 64;

  s.cluster = {1, 1};
  s.warpgroups = WarpgroupMode::Cooperative;
  s.raster = Raster::AlongM;
  s.persistent = false;

  // Stages: as deep as shared memory allows, up to 4 (3 before Hopper, whose
  // smaller shared memory also serves the epilogue and L1).
  const int maxStages = target.computeCapability() >= 90 ? 4 : 3;
  s.stages = 2;
  for (int stages = maxStages; stages >= 2; --stages) {
    Schedule candidate = s;
    candidate.stages = stages;
    GemmSpec gemm{kind, candidate};
    if (pipelineSharedBytes(makeGemmProblem(layer, gemm)) <=
        target.maxSharedBytesPerBlock) {
      s.stages = stages;
      break;
    }
  }
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
  return s;
}

} // namespace moejit
