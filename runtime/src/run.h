// `moejit run`: compile the grouped GEMMs of a spec, run them on the GPU on
// random inputs and a routing, check them against the float64 CPU
// references and time them.
#pragma once

#include "moejit/dsl.h"
#include "moejit/problem.h"
#include "moejit/spec.h"
#include "runtime/cache/kernel_cache.h"
#include "runtime/src/module.h"
#include "runtime/src/reference.h"
#include "runtime/src/routing.h"

#include <cstdint>
#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

namespace moejit {

struct RunOptions {
  std::string file;                // the .moe spec
  int64_t tokens = 0;              // T
  std::string routing = "uniform"; // uniform | zipf:S | file:PATH (routing.h)
  uint64_t seed = 1;               // inputs and routing
  std::string layer;               // empty: every layer
  std::string gemm;                // empty: every grouped GEMM of the layer
  std::string arch;                // empty: MOEJIT_ARCH, else the GPU's, else sm_90a
  int iters = 20;                  // timed launches (the median is reported); 0: no timing
  int warmup = 3;                  // untimed launches before them
  bool flushL2 = false;            // overwrite 2x the L2 before each timed launch
  std::string jsonPath;            // also write the results here (schema: runResultsJson)
  // Host work and memory per kernel: reference multiply-accumulates, and the
  // buffer size above which weights are made by expert and outputs read
  // back by rows (planGemmCheck in reference.h).
  CheckBudget check;
  double tolerance = 1e-2; // relative Frobenius error allowed (bf16/fp16)
};

// Exit codes of runCommand. Without a GPU the kernels are still compiled and
// runCommand says it cannot run them and returns kRunOk: the README's first
// command must succeed on a GPU-less machine.
inline constexpr int kRunOk = 0;
inline constexpr int kRunBadInput = 1;    // the spec does not parse or compile
inline constexpr int kRunUsage = 2;       // bad options, unreadable files, driver errors
inline constexpr int kRunCheckFailed = 3; // a kernel failed its check

int runCommand(const RunOptions &options, std::ostream &out, std::ostream &err);

// Reads and checks the spec of a run for `target`, its open schedules from
// `tuned` when given. On failure prints why (diagnostics included) to `err`,
// sets `failure` to kRunUsage (unreadable) or kRunBadInput (invalid) and
// returns nullopt.
std::optional<Spec> readRunSpec(const std::string &file, const Target &target, std::ostream &err,
                                int &failure, const ScheduleSource *tuned);

// The grouped GEMMs of one layer compiled into one PTX module.
struct CompiledLayer {
  std::vector<GemmProblem> problems;
  std::vector<std::string> kernelNames; // the compiler's, one per problem
  std::string ptx;
  double compileMs = 0;  // 0 when the kernel cache had it
  bool compiled = false; // false: served by the kernel cache
  std::optional<CacheKey> key;
  ArtifactPtr artifact; // the cache's entry (PTX, and a cubin when one was linked)
};
// Compiles the layer's GEMMs (only `only` when given) through `cache`
// (memory, disk, then the compiler; a miss throws in strict mode). Throws
// Error with the compiler's message.
CompiledLayer compileLayer(KernelCache &cache, const LayerSpec &layer, const Target &target,
                           std::optional<GemmKind> only = std::nullopt);
// The same through a memory-only cache of its own.
CompiledLayer compileLayer(const LayerSpec &layer, const Target &target,
                           std::optional<GemmKind> only = std::nullopt);

// 2*M*N*K summed over experts: the fixed GEMM sizes times the total rows.
double gemmFlops(const GemmProblem &problem, int64_t totalRows);

struct GemmRunSettings {
  uint64_t seed = 1;
  int iters = 0;
  int warmup = 0;
  bool flushL2 = false; // before each timed launch, memset a buffer of 2x the L2, untimed
  CheckBudget check;
  double tolerance = 1e-2;
};

struct GemmRunResult {
  Comparison c;                     // over the checked rows of C
  std::optional<Comparison> auxOut; // act(H) (up_proj) or dS (dh)
  // NaN/inf, or poison left unwritten, over the outputs read back: all of C
  // and aux_out, or their checked rows when the plan reads back by rows.
  int64_t nonFiniteOutputs = 0;
  int64_t checkedRows = 0, outputRows = 0;
  bool passed = false;
  double medianMs = 0; // when timed
  // The up-projection with an activation also runs with C = null (act(H)
  // only, what an inference forward launches): act checked again, timed
  // the same way; absent for the other GEMMs.
  std::optional<Comparison> actOnly;
  double actOnlyMs = 0;
  double flops = 0;
  std::string failure; // why it failed, empty when passed
  GemmCheckPlan plan;  // what was made, uploaded and read back
  // The worst relative error of C and aux_out (of both runs).
  double relativeError() const;
  // flops / medianMs (actOnlyMs), 0 when not timed.
  double tflops() const { return tflopsAt(medianMs); }
  double actOnlyTflops() const { return tflopsAt(actOnlyMs); }
  double tflopsAt(double ms) const;
};

// Runs one GEMM of `layer` with `kernel` (of a module of `gpu`) on the
// routing `rows`: fresh random inputs, outputs poisoned with 0xFF bytes (a
// NaN in bf16 and fp16) except dS, which the ABI accumulates into and so is
// zeroed; checks and optionally times it (each timed launch between its own
// pair of events, the median reported). What is made and read back follows
// planGemmCheck (reference.h): for large weights only the experts with rows
// get random values, made a chunk at a time with the reference of their
// checked rows, and the rest of B is poisoned (a kernel reading it makes
// NaN); large outputs are read back only at the checked rows. Throws Error
// on driver failures.
GemmRunResult runGemm(const Gpu &gpu, Function &kernel, const LayerSpec &layer,
                      const GemmProblem &problem, const Target &target, const GroupedRows &rows,
                      const GemmRunSettings &settings);

// One kernel of a run, as `moejit run --json` writes it.
struct KernelRunRecord {
  std::string layer;
  GemmProblem problem;
  KernelPath path = KernelPath::Portable;
  int64_t rows = 0; // R, the grouped rows
  bool timed = false;
  GemmRunResult result;
};

// The --json document of a per-GEMM run:
//   {"device": str, "arch": str, "tokens": T, "routing": str, "seed": S,
//    "kernels": [{"layer": str, "gemm": "up_proj"|..., "path":
//    "hopper"|"portable", "rows": R, "m": int, "n": int, "k": int, "flops":
//    float, "median_ms": float|null, "tflops": float|null, "rel_err":
//    float|null, "non_finite": int, "pass": bool}]}
// m, n, k are the problem's fixed sizes (the varlen one 0); median_ms and
// tflops are null when not timed (--iters 0); rel_err (the worse of C and
// aux_out) is null when it is infinite (non-finite outputs). Without a GPU,
// device is "none" and kernels is empty.
std::string runResultsJson(const std::string &device, const std::string &arch,
                           const RunOptions &options, const std::string &routing,
                           const std::vector<KernelRunRecord> &kernels);

} // namespace moejit
