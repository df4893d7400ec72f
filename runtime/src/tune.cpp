#include "runtime/src/tune.h"

#include "autotune/search.h"
#include "autotune/tuning_db.h"
#include "moejit/error.h"
#include "moejit/knobs.h"
#include "moejit/version.h"
#include "runtime/api/layer_module.h"
#include "runtime/src/driver_info.h"
#include "runtime/src/run.h"

#include <fmt/format.h>
#include <fmt/ostream.h>

#include <memory>
#include <optional>
#include <ostream>
#include <sstream>

namespace moejit {
namespace {

std::string describe(const Schedule &s) {
  std::string text = fmt::format("{}x{}x{} {} stages {}", s.tile.m, s.tile.n, s.tile.k, s.stages,
                                 toString(s.warpgroups));
  if (s.cluster.m != 1 || s.cluster.n != 1)
    text += fmt::format(" cluster {}x{}", s.cluster.m, s.cluster.n);
  text += fmt::format(" {}", toString(s.raster));
  if (s.persistent)
    text += " persistent";
  if (s.stores != StoreMode::Direct)
    text += fmt::format(" stores {}", toString(s.stores));
  return text;
}

std::string firstLine(const std::string &text) { return text.substr(0, text.find('\n')); }

class Tuner {
public:
  Tuner(const TuneOptions &options, std::ostream &out, KernelCache &cache, const Gpu &gpu,
        const Target &target)
      : options_(options), out_(out), cache_(cache), gpu_(gpu), target_(target),
        compiler_(makeDefaultKernelCompiler()) {}

  // Compiles the batch as one module (one kernel per schedule; one by one
  // when that fails, so a schedule the lowering refuses fails alone), then
  // checks and times each kernel on `rows`.
  std::vector<Measurement> measure(const LayerSpec &layer, GemmKind kind, const GroupedRows &rows,
                                   const std::vector<Schedule> &batch) {
    std::vector<GemmProblem> problems;
    for (size_t i = 0; i < batch.size(); ++i) {
      problems.push_back(makeGemmProblem(layer, GemmSpec{kind, batch[i]}));
      problems.back().kernelName += fmt::format("_tune{}", i);
    }
    std::vector<Measurement> results(batch.size());
    std::vector<std::pair<ArtifactPtr, std::vector<size_t>>> modules;
    try {
      modules.emplace_back(compile(problems), std::vector<size_t>{});
      for (size_t i = 0; i < batch.size(); ++i)
        modules.back().second.push_back(i);
    } catch (const Error &) {
      modules.clear();
      for (size_t i = 0; i < batch.size(); ++i) {
        try {
          modules.emplace_back(compile({problems[i]}), std::vector<size_t>{i});
        } catch (const Error &e) {
          results[i].failure = "compile failed: " + firstLine(e.what());
          report(batch[i], results[i]);
        }
      }
    }
    for (const auto &[artifact, indices] : modules) {
      std::optional<Module> module;
      try {
        module.emplace(loadModule(gpu_, *artifact));
      } catch (const Error &e) {
        for (size_t i : indices) {
          results[i].failure = "load failed: " + firstLine(e.what());
          report(batch[i], results[i]);
        }
        continue;
      }
      for (size_t slot = 0; slot < indices.size(); ++slot) {
        const size_t i = indices[slot];
        try {
          Function kernel = module->function(artifact->kernelNames[slot]);
          const GemmRunResult run =
              runGemm(gpu_, kernel, layer, problems[i], target_, rows, options_.measure);
          if (run.passed)
            // Inference: an up-projection with an activation launches with
            // C = null (act(H) only), which runGemm times as well.
            results[i].tflops = options_.inference && run.actOnly ? run.actOnlyTflops()
                                                                  : run.tflops();
          else
            results[i].failure = "check failed: " + run.failure;
        } catch (const Error &e) {
          results[i].failure = firstLine(e.what());
        }
        report(batch[i], results[i]);
      }
    }
    return results;
  }

private:
  void report(const Schedule &schedule, const Measurement &m) {
    out_ << fmt::format("    {:<52} {}\n", describe(schedule),
                        m.tflops ? fmt::format("{:7.1f} TFLOP/s", *m.tflops) : "FAIL " + m.failure);
    out_.flush();
  }

  ArtifactPtr compile(const std::vector<GemmProblem> &problems) {
    return compileThroughCache(cache_, moduleKey(problems, target_), problems, target_,
                               compiler_.get())
        .artifact;
  }

  const TuneOptions &options_;
  std::ostream &out_;
  KernelCache &cache_;
  const Gpu &gpu_;
  const Target &target_;
  std::unique_ptr<KernelCompiler> compiler_;
};

int tune(const TuneOptions &options, std::ostream &out, std::ostream &err) {
  auto usage = [&](const std::string &message) {
    err << "moejit tune: error: " << message << "\n";
    return kRunUsage;
  };
  if (options.tokens <= 0)
    return usage("--tokens must be at least 1");
  if (options.measure.iters <= 0 || options.measure.warmup < 0)
    return usage("--iters must be at least 1 (the schedules are compared by their time)");
  if (options.budget < 1 || options.rounds < 1)
    return usage("--budget and --rounds must be at least 1");
  if (options.confirmRuns < 0 || options.confirmTop < 0)
    return usage("--confirm must be 0 or more");
  std::optional<GemmKind> onlyGemm;
  if (!options.gemm.empty()) {
    onlyGemm = parseGemmKind(options.gemm);
    if (!onlyGemm)
      return usage("unknown grouped GEMM '" + options.gemm +
                   "'; use up_proj, down_proj, dh, dw1, dw2 or dx");
  }
  const RoutingMethod routing = RoutingMethod::parse(options.routing);
  const Knobs knobs = Knobs::fromEnvironment();
  const std::string dbPath = options.db.empty() ? knobs.tuningDb : options.db;
  if (dbPath.empty())
    return usage("no tuning database: give --db FILE or set MOEJIT_TUNING_DB");
  Target target;
  try {
    target = runTarget(options.arch, knobs);
  } catch (const std::invalid_argument &e) {
    return usage(e.what());
  }
  try {
    TuningDb::load(dbPath); // a database that cannot be read stops us before any GPU work
  } catch (const Error &e) {
    return usage(e.what());
  }
  // The spec's own schedules (the defaults where it leaves them open) are
  // where each search starts, whatever the database holds.
  int failure = kRunOk;
  const std::optional<Spec> spec = readRunSpec(options.file, target, err, failure, nullptr);
  if (!spec)
    return failure;
  std::vector<const LayerSpec *> layers;
  for (const LayerSpec &layer : spec->layers)
    if (options.layer.empty() || layer.name == options.layer)
      layers.push_back(&layer);
  if (layers.empty())
    return usage(options.file + " has no layer '" + options.layer + "'");

  std::optional<Gpu> gpu;
  try {
    gpu.emplace(knobs.cudaDriver);
  } catch (const Error &e) {
    if (e.kind() != ErrorKind::NoGpu)
      throw;
    return usage(std::string("tuning measures kernels on a GPU: ") + e.what());
  }
  fmt::print(out, "GPU: {} ({} SMs), target {}; T={} routing {}, {} timed launches{} per "
                  "schedule, {} launches, database {}\n",
             gpu->properties().name, gpu->properties().smCount, target.arch, options.tokens,
             routing.describe(), options.measure.iters,
             options.measure.flushL2 ? " (L2 flushed)" : "",
             options.inference ? "inference" : "training", dbPath);

  KernelCache cache(KernelCacheOptions::fromKnobs(knobs));
  Tuner tuner(options, out, cache, *gpu, target);
  bool allMeasured = true;
  for (const LayerSpec *layer : layers) {
    const GroupedRows rows = groupByExpert(
        route(routing, options.tokens, layer->experts, layer->router.topK, options.measure.seed));
    std::vector<GemmKind> done;
    for (const GemmSpec &gemm : layer->gemms) {
      if ((onlyGemm && gemm.kind != *onlyGemm) ||
          std::find(done.begin(), done.end(), gemm.kind) != done.end())
        continue;
      done.push_back(gemm.kind);
      fmt::print(out, "layer {} {}: from {}\n", layer->name, toString(gemm.kind),
                 describe(gemm.schedule));
      SearchOptions search;
      search.budget = options.budget;
      search.rounds = options.rounds;
      search.minGain = options.minGain;
      search.confirmTop = options.confirmTop;
      search.confirmRuns = options.confirmRuns;
      const SearchResult result = searchSchedules(
          *layer, gemm.kind, target, gemm.schedule,
          [&](const std::vector<Schedule> &batch) {
            return tuner.measure(*layer, gemm.kind, rows, batch);
          },
          search);
      if (!result.finalists.empty()) {
        fmt::print(out, "  medians of {} more run{} each:\n", options.confirmRuns,
                   options.confirmRuns == 1 ? "" : "s");
        for (const Measurement &m : result.finalists)
          fmt::print(out, "    {:<52} {}\n", describe(m.schedule),
                     m.tflops ? fmt::format("{:7.1f} TFLOP/s", *m.tflops) : "FAIL " + m.failure);
      }
      if (result.bestTflops <= 0) {
        fmt::print(out, "  every schedule failed; nothing stored\n");
        allMeasured = false;
        continue;
      }
      TunedSchedule entry = tunedScheduleFor(*layer, gemm.kind, target);
      entry.schedule = result.best;
      entry.tflops = result.bestTflops;
      entry.defaultTflops = result.startTflops;
      entry.tokens = options.tokens;
      entry.routing = routing.describe();
      entry.device = gpu->properties().name;
      entry.moejitVersion = std::string(kVersion);
      entry.objective = options.inference ? "inference" : "training";
      TuningDb::update(dbPath, std::move(entry));
      fmt::print(out, "  best of {} schedules: {}  {:.1f} TFLOP/s", result.measured.size(),
                 describe(result.best), result.bestTflops);
      if (result.startTflops > 0)
        fmt::print(out, " ({:+.1f}% over the start)",
                   100 * (result.bestTflops / result.startTflops - 1));
      fmt::print(out, "; stored\n");
    }
  }
  return allMeasured ? kRunOk : kRunCheckFailed;
}

} // namespace

int tuneCommand(const TuneOptions &options, std::ostream &out, std::ostream &err) {
  try {
    return tune(options, out, err);
  } catch (const std::exception &e) {
    err << "moejit tune: error: " << e.what() << "\n";
    return kRunUsage;
  }
}

} // namespace moejit
