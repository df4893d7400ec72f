// `moejit tune`: measures schedules of a spec's grouped GEMMs on the GPU
// (autotune/search.h picks them; each is compiled, checked against the
// float64 reference and timed like `moejit run`) and keeps the fastest per
// GEMM shape in a tuning database (autotune/tuning_db.h, docs/tuning.md).
#pragma once

#include "runtime/src/run.h"

#include <cstdint>
#include <iosfwd>
#include <string>

namespace moejit {

struct TuneOptions {
  std::string file;                // the .moe spec
  std::string db;                  // the database to update; empty: MOEJIT_TUNING_DB
  int64_t tokens = 32768;          // T the schedules are measured at
  std::string routing = "uniform"; // uniform | zipf:S | file:PATH
  std::string layer; // empty: every layer
  std::string gemm;  // empty: every grouped GEMM of the layer
  std::string arch;  // empty: MOEJIT_ARCH, else the GPU's
  // Inputs (and the routing's) seed, timed launches per schedule (median),
  // warm-up, L2 flush, check budget and tolerance, as `moejit run` takes them.
  GemmRunSettings measure{.seed = 1, .iters = 10, .warmup = 2, .flushL2 = true};
  // Time an up-projection with an activation as the inference forward
  // launches it (act(H) only, C = null) instead of writing H too.
  bool inference = false;
  int budget = 40; // schedules measured per GEMM, the start included
  int rounds = 3;
  double minGain = 0.01; // a schedule must beat the best by this fraction
  int confirmTop = 3;    // then the start and this many of the fastest are measured
  int confirmRuns = 3;   // this many more times, interleaved; medians decide
};

// Exit codes as runCommand's (kRunOk, kRunBadInput, kRunUsage); a GEMM
// whose every schedule failed its check is kRunCheckFailed, and nothing of
// it is stored.
int tuneCommand(const TuneOptions &options, std::ostream &out, std::ostream &err);

} // namespace moejit
