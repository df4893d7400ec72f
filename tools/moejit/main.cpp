// The moejit command line: check, fmt, compile, run, precompile, cache, info.
#include "compiler/backend/compile.h"
#include "moejit/dsl.h"
#include "moejit/knobs.h"
#include "moejit/moejit.h"
#include "moejit/problem.h"
#include "moejit/version.h"
#include "runtime/cache/kernel_cache.h"
#include "runtime/src/driver_info.h"
#include "runtime/layer/forward_job.h"
#include "runtime/src/run.h"
#include "runtime/src/tune.h"
#include "autotune/tuning_db.h"

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace {

using namespace moejit;

// Exit codes: 0 ok, 1 bad input (diagnostics printed), 2 usage or I/O error,
// 3 a GPU run failed its check.
constexpr int kExitBadInput = 1;
constexpr int kExitUsage = 2;

std::optional<std::string> readFile(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::cerr << fmt::format("moejit: error: cannot read '{}': {}\n", path, std::strerror(errno));
    return std::nullopt;
  }
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

bool writeOutput(const std::string &path, const std::string &text) {
  if (path.empty() || path == "-") {
    std::cout << text;
    return true;
  }
  std::ofstream out(path, std::ios::binary);
  out << text;
  if (!out) {
    std::cerr << fmt::format("moejit: error: cannot write '{}': {}\n", path, std::strerror(errno));
    return false;
  }
  return true;
}

// The target: --arch, else MOEJIT_ARCH, else the GPU present, else sm_90a.
std::optional<Target> resolveTarget(const std::string &archFlag, const Knobs &knobs) {
  std::string arch = archFlag;
  if (arch.empty())
    arch = knobs.arch;
  if (arch.empty())
    arch = defaultArchOfPresentGpu(knobs).value_or("sm_90a");
  try {
    Target target = Target::fromArch(arch);
    if (archFlag.empty() && knobs.arch.empty())
      applyPresentGpu(knobs, target);
    return target;
  } catch (const std::invalid_argument &e) {
    std::cerr << "moejit: error: " << e.what() << "\n";
    return std::nullopt;
  }
}

// Reads and checks a .moe file, its open schedules from MOEJIT_TUNING_DB when
// set; prints diagnostics and returns nullopt on error.
std::optional<Spec> loadSpec(const std::string &path, const Target &target, const Knobs &knobs) {
  TuningDb tuned;
  try {
    tuned = tuningDbOfKnobs(knobs);
  } catch (const Error &e) {
    std::cerr << "moejit: error: " << e.what() << "\n";
    return std::nullopt;
  }
  std::optional<std::string> text = readFile(path);
  if (!text)
    return std::nullopt;
  Diagnostics diags(*text);
  std::optional<Spec> spec = parseSpec(*text, path, target, diags, &tuned);
  if (!diags.all().empty())
    std::cerr << diags.render();
  return spec;
}

std::optional<EmitStage> parseEmitStage(const std::string &emit) {
  if (emit == "mlir")
    return EmitStage::Mlir;
  if (emit == "llvm")
    return EmitStage::Llvm;
  if (emit == "ptx")
    return EmitStage::Ptx;
  return std::nullopt;
}

int cmdCheck(const std::string &file, const std::string &archFlag, const Knobs &knobs) {
  std::optional<Target> target = resolveTarget(archFlag, knobs);
  if (!target)
    return kExitUsage;
  std::optional<Spec> spec = loadSpec(file, *target, knobs);
  if (!spec)
    return kExitBadInput;
  size_t gemms = 0;
  for (const LayerSpec &layer : spec->layers)
    gemms += layer.gemms.size();
  std::cout << fmt::format("{}: ok ({} layer{}, {} grouped GEMM{}, target {})\n", file,
                           spec->layers.size(), spec->layers.size() == 1 ? "" : "s", gemms,
                           gemms == 1 ? "" : "s", target->arch);
  return 0;
}

int cmdFmt(const std::string &file, const std::string &archFlag, const std::string &out,
           const Knobs &knobs) {
  std::optional<Target> target = resolveTarget(archFlag, knobs);
  if (!target)
    return kExitUsage;
  std::optional<Spec> spec = loadSpec(file, *target, knobs);
  if (!spec)
    return kExitBadInput;
  return writeOutput(out, printSpec(*spec)) ? 0 : kExitUsage;
}

int cmdCompile(const std::string &file, const std::string &emit, const std::string &archFlag,
               const std::string &out, const std::string &dumpAfter, const std::string &layerName,
               const Knobs &knobs) {
  std::optional<Target> target = resolveTarget(archFlag, knobs);
  if (!target)
    return kExitUsage;
  if (emit == "ast") {
    std::optional<std::string> text = readFile(file);
    if (!text)
      return kExitUsage;
    Diagnostics diags(*text);
    std::optional<std::string> ast = dumpAst(*text, file, diags);
    if (!diags.all().empty())
      std::cerr << diags.render();
    if (!ast)
      return kExitBadInput;
    return writeOutput(out, *ast) ? 0 : kExitUsage;
  }
  std::optional<Spec> spec = loadSpec(file, *target, knobs);
  if (!spec)
    return kExitBadInput;
  if (!layerName.empty() && !spec->layer(layerName)) {
    std::cerr << fmt::format("moejit: error: {} has no layer '{}'\n", file, layerName);
    return kExitUsage;
  }
  if (emit == "spec") {
    nlohmann::json json = toJson(*spec);
    if (!layerName.empty())
      json = toJson(*spec->layer(layerName));
    return writeOutput(out, json.dump(2) + "\n") ? 0 : kExitUsage;
  }
  std::optional<EmitStage> stage = parseEmitStage(emit);
  if (!stage) {
    std::cerr << fmt::format("moejit: error: unknown --emit={}; use ast, spec, mlir, "
                             "llvm or ptx\n",
                             emit);
    return kExitUsage;
  }
  std::vector<GemmProblem> problems;
  for (const LayerSpec &layer : spec->layers) {
    if (!layerName.empty() && layer.name != layerName)
      continue;
    for (const GemmSpec &gemm : layer.gemms)
      problems.push_back(makeGemmProblem(layer, gemm));
  }
  CompileOptions options;
  options.target = *target;
  options.stage = *stage;
  options.dumpAfter = dumpAfter;
  CompileOutput output;
  std::string error;
  if (!compileGemms(problems, options, output, error)) {
    std::cerr << "moejit: error: compiling " << file << " failed:\n" << error << "\n";
    return kExitBadInput;
  }
  if (!output.dumps.empty())
    std::cerr << output.dumps;
  return writeOutput(out, output.text) ? 0 : kExitUsage;
}

// Fills the kernel cache with every layer of `files` for the target; needs
// no GPU. Never strict: filling the cache is what strict mode waits for.
int cmdPrecompile(const std::vector<std::string> &files, const std::string &archFlag,
                  int smCount) {
  RuntimeOptions options;
  options.arch = archFlag;
  options.smCount = smCount;
  options.strict = false;
  Runtime runtime(options);
  const std::string directory = runtime.cacheDirectory();
  std::cout << fmt::format("target {} ({} SMs), kernel cache {}\n", runtime.target().arch,
                           runtime.target().smCount,
                           directory.empty() ? "in memory only (not kept)" : directory);
  int status = 0;
  for (const std::string &file : files) {
    Spec spec;
    try {
      spec = runtime.readSpec(file);
    } catch (const Error &e) {
      std::cerr << e.what();
      status = kExitBadInput;
      continue;
    }
    for (const LayerSpec &layer : spec.layers) {
      const auto start = std::chrono::steady_clock::now();
      try {
        const bool compiled = runtime.precompile(layer);
        const double ms =
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                .count();
        std::cout << fmt::format(
            "{}: layer {}: {} grouped GEMMs {}\n", file, layer.name, layer.gemms.size(),
            compiled ? fmt::format("compiled in {:.0f} ms", ms) : std::string("already cached"));
      } catch (const Error &e) {
        std::cerr << fmt::format("moejit: error: {}: layer {}: {}\n", file, layer.name, e.what());
        status = kExitBadInput;
      }
    }
  }
  return status;
}

std::string formatUnixTime(int64_t seconds) {
  const std::time_t time = static_cast<std::time_t>(seconds);
  std::tm utc{};
  gmtime_r(&time, &utc);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &utc);
  return text;
}

std::string joinNames(const std::vector<std::string> &names) {
  std::string joined;
  for (const std::string &name : names)
    joined += (joined.empty() ? "" : ",") + name;
  return joined;
}

// `moejit cache list|stats|clear|verify` on MOEJIT_CACHE_DIR (or its fallbacks).
int cmdCache(const std::string &action, bool removeBad, const Knobs &knobs) {
  KernelCacheOptions options = KernelCacheOptions::fromKnobs(knobs);
  options.strict = false;
  KernelCache cache(options);
  if (!cache.diskEnabled()) {
    std::cerr << fmt::format("moejit: error: no usable kernel cache directory ('{}')\n",
                             knobs.cacheDir);
    return kExitUsage;
  }
  if (action == "list") {
    for (const CacheEntryInfo &entry : cache.list()) {
      std::cout << fmt::format(
          "{}  {:>9} B  ptx {:>9} B  cubin {:>9} B  created {}  used {}  {}\n", entry.key,
          entry.fileBytes, entry.ptxBytes, entry.cubinBytes,
          formatUnixTime(entry.createdUnixSeconds), formatUnixTime(entry.lastUsedUnixSeconds),
          entry.problem.empty() ? joinNames(entry.kernelNames) : "BAD: " + entry.problem);
    }
    return 0;
  }
  if (action == "stats") {
    const KernelCacheStats stats = cache.stats();
    std::cout << fmt::format("directory {}\nentries {}\nbytes {}\n", cache.directory(),
                             stats.entries, stats.bytes);
    return 0;
  }
  if (action == "clear") {
    const size_t removed = cache.clear();
    std::cout << fmt::format("removed {} entr{} from {}\n", removed, removed == 1 ? "y" : "ies",
                             cache.directory());
    return 0;
  }
  const std::vector<BadCacheEntry> bad = cache.verify(removeBad);
  for (const BadCacheEntry &entry : bad)
    std::cout << fmt::format("bad entry {}: {}{}\n", entry.path, entry.problem,
                             removeBad ? " (removed)" : "");
  const size_t total = cache.list().size() + (removeBad ? bad.size() : 0);
  std::cout << fmt::format("{} of {} entries bad in {}\n", bad.size(), total, cache.directory());
  return bad.empty() ? 0 : kExitBadInput;
}

int cmdInfo(const Knobs &knobs) {
  std::cout << fmt::format("moejit {}\n", kVersion);
  std::cout << fmt::format("LLVM/MLIR {}\n", kLlvmVersion);
  std::cout << fmt::format("CUDA toolkit headers {}\n", kCudaToolkitVersion);
  std::cout << describeGpu(knobs);
  std::cout << "environment knobs:\n";
  for (const auto &[name, value] : knobs.describe())
    std::cout << fmt::format("  {:<20} {}\n", name, value);
  return 0;
}

} // namespace

int main(int argc, char **argv) {
  CLI::App app{"moejit: a JIT kernel generator for Mixture-of-Experts grouped GEMMs"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string(moejit::kVersion));

  std::string file, arch, out, emit = "ptx", dumpAfter, layer;

  CLI::App *check = app.add_subcommand("check", "Parse and check a .moe spec");
  check->add_option("file", file, "the .moe file")->required();
  check->add_option("--arch", arch, "target architecture (sm_80, sm_90a, ...)");

  CLI::App *fmtCmd = app.add_subcommand("fmt", "Print the canonical form of a .moe spec");
  fmtCmd->add_option("file", file, "the .moe file")->required();
  fmtCmd->add_option("--arch", arch, "target architecture the schedules are filled for");
  fmtCmd->add_option("-o,--output", out, "write here instead of stdout");

  CLI::App *compile = app.add_subcommand("compile", "Compile a .moe spec and print a stage");
  compile->add_option("file", file, "the .moe file")->required();
  compile->add_option("--emit", emit, "stage to print: ast, spec, mlir, llvm, ptx")
      ->check(CLI::IsMember({"ast", "spec", "mlir", "llvm", "ptx"}));
  compile->add_option("--arch", arch,
                      "target architecture (default: the GPU present, "
                      "else sm_90a)");
  compile->add_option("-o,--output", out, "write here instead of stdout");
  compile->add_option("--dump-after", dumpAfter,
                      "print the IR after this pass (its argument name) to stderr");
  compile->add_option("--layer", layer, "only this layer");

  RunOptions runOptions;
  CLI::App *run = app.add_subcommand(
      "run", "Run the grouped GEMMs of a spec on the GPU against a CPU reference");
  run->add_option("file", runOptions.file, "the .moe file")->required();
  run->add_option("--tokens", runOptions.tokens, "token count T")->required();
  run->add_option("--routing", runOptions.routing, "uniform, zipf:S (skewed, S > 0) or file:PATH");
  run->add_option("--seed", runOptions.seed, "random seed");
  run->add_option("--layer", runOptions.layer, "only this layer");
  run->add_option("--gemm", runOptions.gemm, "only this grouped GEMM (up_proj, ...)");
  run->add_option("--arch", runOptions.arch, "target architecture (default: the GPU's)");
  run->add_option("--iters", runOptions.iters, "timed iterations (median reported)");
  bool forward = false, rounding = false;
  std::string routingLogits;
  run->add_flag("--forward", forward,
                "run the whole layer forward (router, permutation, up_proj, down_proj, "
                "aggregation) instead of each grouped GEMM");
  run->add_flag("--rounding", rounding, "with --forward: tile-aware token rounding");
  run->add_option("--json", runOptions.jsonPath, "also write the results here as JSON");
  run->add_flag("--flush-l2", runOptions.flushL2,
                "overwrite a buffer of 2x the L2 cache before each timed launch (untimed), "
                "so every launch starts with a cold L2 (per-GEMM runs, not --forward)");
  run->add_option("--routing-logits", routingLogits,
                  "with --forward: caller-given random logits (uniform or skewed) instead "
                  "of X Wr");

  TuneOptions tuneOptions;
  bool noFlush = false;
  CLI::App *tune = app.add_subcommand(
      "tune", "Measure schedules of a spec's grouped GEMMs on the GPU and keep the fastest per "
              "GEMM shape in a tuning database (docs/tuning.md)");
  tune->add_option("file", tuneOptions.file, "the .moe file")->required();
  tune->add_option("--db", tuneOptions.db,
                   "the tuning database to update (default: MOEJIT_TUNING_DB)");
  tune->add_option("--tokens", tuneOptions.tokens, "token count T to measure at (default 32768)");
  tune->add_option("--routing", tuneOptions.routing, "uniform, zipf:S or file:PATH");
  tune->add_option("--seed", tuneOptions.measure.seed, "random seed");
  tune->add_option("--layer", tuneOptions.layer, "only this layer");
  tune->add_option("--gemm", tuneOptions.gemm, "only this grouped GEMM (up_proj, ...)");
  tune->add_option("--arch", tuneOptions.arch, "target architecture (default: the GPU's)");
  tune->add_option("--iters", tuneOptions.measure.iters,
                   "timed launches per schedule (default 10)");
  tune->add_option("--budget", tuneOptions.budget,
                   "schedules measured per GEMM, the start included (default 40)");
  tune->add_option("--rounds", tuneOptions.rounds, "search rounds per GEMM (default 3)");
  tune->add_option("--confirm", tuneOptions.confirmRuns,
                   "times the start and the 3 fastest are measured again before the choice, "
                   "by medians (default 3; 0: none)");
  tune->add_flag("--no-flush-l2", noFlush, "keep the L2 warm between timed launches");
  tune->add_flag("--inference", tuneOptions.inference,
                 "time up_proj as the inference forward launches it (act(H) only, H not "
                 "stored) rather than as training does");

  std::vector<std::string> precompileFiles;
  CLI::App *precompile = app.add_subcommand(
      "precompile", "Fill the kernel cache with the grouped GEMMs of specs (no GPU needed)");
  precompile->add_option("files", precompileFiles, "the .moe files")->required();
  precompile->add_option("--arch", arch,
                         "target architecture (default: the GPU present, "
                         "else sm_90a)");
  int precompileSms = 0;
  precompile->add_option("--sm-count", precompileSms,
                         "SM count of the GPU the cache is for (part of the cache key; default: "
                         "the GPU present, else 132; an H100 PCIe has 114)")
      ->check(CLI::Range(1, 1024));

  std::string cacheAction;
  bool removeBad = false;
  CLI::App *cacheCmd = app.add_subcommand(
      "cache", "Inspect the kernel cache at MOEJIT_CACHE_DIR: list, stats, clear, verify");
  cacheCmd->add_option("action", cacheAction, "list, stats, clear or verify")
      ->required()
      ->check(CLI::IsMember({"list", "stats", "clear", "verify"}));
  cacheCmd->add_flag("--remove", removeBad, "verify: delete the bad entries too");

  app.add_subcommand("info", "Versions, GPU driver and environment knobs");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError &e) {
    return app.exit(e) == 0 ? 0 : kExitUsage;
  }

  moejit::Knobs knobs;
  try {
    knobs = moejit::Knobs::fromEnvironment();
  } catch (const std::invalid_argument &e) {
    std::cerr << "moejit: error: " << e.what() << "\n";
    return kExitUsage;
  }

  try {
    if (*check)
      return cmdCheck(file, arch, knobs);
    if (*fmtCmd)
      return cmdFmt(file, arch, out, knobs);
    if (*compile)
      return cmdCompile(file, emit, arch, out, dumpAfter, layer, knobs);
    if (*run && forward && runOptions.flushL2) {
      std::cerr << "moejit run: error: --flush-l2 times each grouped GEMM; it does not apply "
                   "to --forward\n";
      return kExitUsage;
    }
    if (*run && forward) {
      ForwardRunOptions f;
      f.file = runOptions.file;
      f.layer = runOptions.layer;
      f.tokens = runOptions.tokens;
      f.tokenRounding = rounding;
      f.routingLogits = routingLogits;
      f.seed = runOptions.seed;
      f.iters = runOptions.iters;
      f.arch = runOptions.arch;
      f.jsonPath = runOptions.jsonPath;
      return runForwardCommand(f, std::cout, std::cerr);
    }
    if (*run)
      return runCommand(runOptions, std::cout, std::cerr);
    if (*tune) {
      tuneOptions.measure.flushL2 = !noFlush;
      return tuneCommand(tuneOptions, std::cout, std::cerr);
    }
    if (*precompile)
      return cmdPrecompile(precompileFiles, arch, precompileSms);
    if (*cacheCmd)
      return cmdCache(cacheAction, removeBad, knobs);
    return cmdInfo(knobs);
  } catch (const std::exception &e) {
    std::cerr << "moejit: error: " << e.what() << "\n";
    return kExitUsage;
  }
}
