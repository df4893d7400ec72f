// The schedule search of `moejit tune`: neighbours of a schedule (one field
// changed, each accepted by the spec checks for the GEMM) and a local search
// that measures them in rounds around the best so far. The measurement is
// the caller's (runtime/src/tune.h runs the kernels on the GPU).
#pragma once

#include "compiler/spec/check.h" // scheduleAccepted
#include "moejit/spec.h"

#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace moejit {

// Schedules that differ from `center` in one choice (the tile's M or N, or K
// off the Hopper path; the stages; the warpgroup mode where the Hopper path
// runs it; the cluster on the Hopper path; the raster where the path uses
// it), each accepted by the checks. A new tile keeps the stages when they
// fit, else the deepest that does. Choices the schedule's path ignores are
// normalised (no two schedules of one kernel); no duplicates, never `center`.
std::vector<Schedule> scheduleNeighbours(const LayerSpec &layer, GemmKind kind,
                                         const Target &target, const Schedule &center);

struct Measurement {
  Schedule schedule;
  std::optional<double> tflops; // absent: it failed
  std::string failure;          // why, when it failed
};

// Measures a batch of schedules (compiled together), one result each, in order.
using MeasureFn = std::function<std::vector<Measurement>(const std::vector<Schedule> &)>;

struct SearchOptions {
  int budget = 40;       // schedules measured in the search, the start included
  int rounds = 3;        // search rounds at most
  double minGain = 0.01; // a fraction: what counts as faster, against noise
  // Then the start and the `confirmTop` fastest others are measured again,
  // `confirmRuns` times, interleaved; the choice is the fastest median of
  // these runs (the search's own reading, biased upwards by the choice of
  // finalists, does not count) among those beating the start's by minGain.
  // 0 runs: the search's single measurements decide.
  int confirmTop = 3;
  int confirmRuns = 3;
};

struct SearchResult {
  Schedule best;          // `start` unless a schedule measured faster
  double bestTflops = 0;  // its median; 0 when nothing could be measured
  double startTflops = 0; // the start's median; 0 when it failed
  std::vector<Measurement> measured;      // the search, in order; one per schedule
  std::vector<Measurement> confirmations; // the repeats, in order
  std::vector<Measurement> finalists;     // the confirmed ones with their medians
};

// Measures `start` and its neighbours, then the neighbours of the fastest
// one not yet measured, and so on, until a round finds nothing faster by
// more than minGain, `rounds` rounds ran or `budget` schedules were measured;
// then confirms (SearchOptions). A schedule that fails any of its
// measurements is never chosen.
SearchResult searchSchedules(const LayerSpec &layer, GemmKind kind, const Target &target,
                             const Schedule &start, const MeasureFn &measure,
                             const SearchOptions &options = {});

} // namespace moejit
