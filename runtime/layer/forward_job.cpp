#include "runtime/layer/forward_job.h"

#include "autotune/tuning_db.h"
#include "moejit/dsl.h"
#include "moejit/error.h"
#include "moejit/knobs.h"
#include "runtime/api/layer_module.h"
#include "runtime/layer/layer_forward_reference.h"
#include "runtime/layer/layer_reference.h"
#include "runtime/src/driver_info.h"
#include "runtime/src/run.h"

#include <fmt/format.h>
#include <fmt/ostream.h>

#include <algorithm>
#include <array>
#include <fstream>
#include <functional>
#include <numeric>
#include <optional>
#include <ostream>
#include <sstream>

namespace moejit {
using namespace internal;
namespace {

constexpr int kStages = 4; // ForwardStage values
constexpr std::array<const char *, kStages> kStageNames = {"routing", "up_proj", "down_proj",
                                                           "aggregation"};

// up_proj and down_proj as one module (their kernels compile in parallel),
// the module Runtime::layer() uses too.
std::pair<GroupedGemmKernel, GroupedGemmKernel>
loadForwardGemms(const Gpu &gpu, KernelCache &cache, const LayerSpec &layer, const Target &target) {
  const std::vector<GemmProblem> problems = forwardProblems(layer);
  const std::unique_ptr<KernelCompiler> compiler = makeDefaultKernelCompiler();
  CachedModule cached;
  try {
    cached = compileThroughCache(cache, moduleKey(problems, target), problems, target,
                                 compiler.get());
  } catch (const Error &e) {
    throw Error("compiling layer '" + layer.name + "' for " + target.arch + " failed:\n" + e.what(),
                e.kind());
  }
  auto module = std::make_shared<const Module>(loadModule(gpu, *cached.artifact));
  auto kernel = [&](size_t i) {
    return GroupedGemmKernel{problems[i], module, module->function(cached.artifact->kernelNames[i])};
  };
  return {kernel(0), kernel(1)};
}

double median(std::vector<double> values) {
  if (values.empty())
    return 0;
  std::nth_element(values.begin(), values.begin() + values.size() / 2, values.end());
  return values[values.size() / 2];
}

template <class T> DeviceBuffer uploadNew(const Gpu &gpu, const std::vector<T> &host) {
  DeviceBuffer buffer = gpu.allocate(host.size() * sizeof(T));
  if (!host.empty())
    buffer.upload(std::span<const T>(host));
  return buffer;
}

// Events around each stage of one forward: mark 0 before, mark s+1 after
// stage s.
class StageEvents final : public ForwardProbe {
public:
  StageEvents(const Gpu &gpu, const Stream &stream) : stream_(stream) {
    for (int i = 0; i <= kStages; ++i)
      marks_.push_back(gpu.createEvent());
  }
  void start() { marks_[0].record(stream_); }
  void stageEnqueued(ForwardStage stage) override {
    marks_[static_cast<size_t>(stage) + 1].record(stream_);
  }
  double stageMs(int stage) const { return marks_[stage + 1].millisecondsSince(marks_[stage]); }
  double totalMs() const { return marks_[kStages].millisecondsSince(marks_[0]); }

private:
  const Stream &stream_;
  std::vector<Event> marks_;
};

// Median milliseconds of `enqueue` over `iters` runs after `warmup`.
double timeMedian(const Gpu &gpu, const Stream &stream, int warmup, int iters,
                  const std::function<void()> &enqueue) {
  for (int i = 0; i < warmup; ++i)
    enqueue();
  std::vector<Event> starts, stops;
  for (int i = 0; i < iters; ++i) {
    starts.push_back(gpu.createEvent());
    stops.push_back(gpu.createEvent());
  }
  for (int i = 0; i < iters; ++i) {
    starts[i].record(stream);
    enqueue();
    stops[i].record(stream);
  }
  stream.synchronize();
  std::vector<double> times(iters);
  for (int i = 0; i < iters; ++i)
    times[i] = stops[i].millisecondsSince(starts[i]);
  return median(times);
}

std::optional<RouterSource> parseRouterSource(const std::string &text) {
  if (text.empty())
    return RouterSource::Weights;
  if (text == "uniform")
    return RouterSource::UniformLogits;
  if (text == "skewed")
    return RouterSource::SkewedLogits;
  return std::nullopt;
}

std::string describeSource(RouterSource source) {
  switch (source) {
  case RouterSource::Weights:
    return "router weights (logits = X Wr)";
  case RouterSource::UniformLogits:
    return "uniform logits";
  case RouterSource::SkewedLogits:
    return "skewed logits";
  }
  return "";
}

struct ForwardTimes {
  double totalMs = 0;
  std::array<double, kStages> stageMs{};
  // route() alone in variants, to split the routing stage.
  double routeFromLogitsMs = 0;  // top-K + metadata, plain
  double routeFromWeightsMs = 0; // + router logits X Wr (router weights only)
  double routeRoundedMs = 0;     // + token rounding (rounding only)
};

struct ForwardJob {
  const ForwardRunOptions &options;
  const Gpu &gpu;
  const LayerSpec &layer;
  const MoeLayer &moe;
  RouterSource source;
};

ForwardTimes timeForward(const ForwardJob &job, const Stream &stream, const ForwardArgs &args,
                         CUdeviceptr logits) {
  const ForwardRunOptions &options = job.options;
  ForwardTimes times;
  for (int i = 0; i < options.warmup; ++i)
    job.moe.forward(stream, args);
  std::vector<StageEvents> runs;
  for (int i = 0; i < options.iters; ++i)
    runs.emplace_back(job.gpu, stream);
  for (StageEvents &run : runs) {
    run.start();
    job.moe.forward(stream, args, &run);
  }
  stream.synchronize();
  std::vector<double> total, stage(runs.size());
  for (const StageEvents &run : runs)
    total.push_back(run.totalMs());
  times.totalMs = median(total);
  for (int s = 0; s < kStages; ++s) {
    for (size_t i = 0; i < runs.size(); ++i)
      stage[i] = runs[i].stageMs(s);
    times.stageMs[s] = median(stage);
  }

  auto timeRoute = [&](bool rounded, const RouterInput &input) {
    const RoutingKernels &kernels = job.moe.routingKernels(rounded);
    return timeMedian(job.gpu, stream, options.warmup, options.iters, [&] {
      kernels.route(stream, input, args.tokens, args.workspace, args.workspaceBytes);
    });
  };
  RouterInput fromLogits;
  fromLogits.logits = logits;
  times.routeFromLogitsMs = timeRoute(false, fromLogits);
  if (job.source == RouterSource::Weights) {
    RouterInput fromWeights;
    fromWeights.x = args.x;
    fromWeights.weights = args.routerWeights;
    fromWeights.hidden = job.layer.hidden;
    times.routeFromWeightsMs = timeRoute(false, fromWeights);
  }
  if (options.tokenRounding)
    times.routeRoundedMs = timeRoute(true, fromLogits);
  return times;
}

int runForward(const ForwardRunOptions &options, std::ostream &out, std::ostream &err) {
  const std::optional<RouterSource> source = parseRouterSource(options.routingLogits);
  if (!source) {
    err << "moejit run: error: --routing-logits must be uniform or skewed\n";
    return kRunUsage;
  }
  if (options.tokens < 0 || options.iters < 0 || options.warmup < 0) {
    err << "moejit run: error: --tokens and --iters must be 0 or more\n";
    return kRunUsage;
  }
  const Knobs knobs = Knobs::fromEnvironment();
  Target target;
  try {
    target = runTarget(options.arch, knobs);
  } catch (const std::invalid_argument &e) {
    err << "moejit run: error: " << e.what() << "\n";
    return kRunUsage;
  }
  TuningDb tuned;
  try {
    tuned = tuningDbOfKnobs(knobs);
  } catch (const Error &e) {
    err << "moejit run: error: " << e.what() << "\n";
    return kRunUsage;
  }
  int failure = kRunOk;
  const std::optional<Spec> spec = readRunSpec(options.file, target, err, failure, &tuned);
  if (!spec)
    return failure;
  const LayerSpec *layer =
      options.layer.empty() ? &spec->layers.front() : spec->layer(options.layer);
  if (!layer) {
    err << "moejit run: error: " << options.file << " has no layer '" << options.layer << "'\n";
    return kRunUsage;
  }

  std::optional<Gpu> gpu;
  try {
    gpu.emplace(knobs.cudaDriver);
  } catch (const Error &e) {
    if (e.kind() != ErrorKind::NoGpu)
      throw;
    fmt::print(out, "no GPU: cannot run the forward of layer {} here\n  ({})\n", layer->name,
               e.what());
    return kRunOk;
  }
  fmt::print(out, "GPU: {} ({} SMs), target {}\n", gpu->properties().name,
             gpu->properties().smCount, target.arch);

  KernelCache cache(KernelCacheOptions::fromKnobs(knobs));
  const std::unique_ptr<TemplateKernelCache> templates =
      makeTemplateKernelCache(knobs, cache, target);
  const MoeLayer moe = loadMoeLayer(*gpu, cache, *templates, *layer, target, options.tokenRounding);
  const RoutingKernels &kernels = moe.routingKernels(options.tokenRounding);
  const RoutingKernelsConfig &config = kernels.config();
  const int64_t T = options.tokens;
  const int d = layer->hidden;

  LayerHostInputs inputs = randomLayerWeights(*layer, *source, options.seed);
  randomTokens(inputs, *layer, *source, T, options.seed);
  DeviceBuffer x = uploadNew(*gpu, inputs.upProj.a);
  DeviceBuffer w1 = uploadNew(*gpu, inputs.upProj.b);
  DeviceBuffer w2 = uploadNew(*gpu, inputs.downProj.b);
  DeviceBuffer routerWeights = uploadNew(*gpu, inputs.routerWeights);
  DeviceBuffer logits = uploadNew(*gpu, inputs.logits);
  DeviceBuffer o = gpu->allocate(T * d * sizeof(uint16_t));
  o.fillBytes(0xFF); // NaN in bf16 and fp16: every element must be written

  ForwardArgs args;
  args.x = x.pointer();
  args.routerWeights = routerWeights.pointer();
  args.routerLogits = logits.pointer();
  args.w1 = w1.pointer();
  args.w2 = w2.pointer();
  args.out = o.pointer();
  args.tokens = T;
  args.options.tokenRounding = options.tokenRounding;
  const size_t workspaceBytes = moe.workspaceBytes(T, args.options);
  DeviceBuffer workspace = gpu->allocate(workspaceBytes);
  args.workspace = workspace.pointer();
  args.workspaceBytes = workspaceBytes;
  fmt::print(out, "layer {}: E={} d={} n={} K={} {}, T={}, {}, {}, seed {}, workspace {:.1f} MiB\n",
             layer->name, layer->experts, d, layer->intermediate, layer->router.topK,
             toString(layer->activation), T, describeSource(*source),
             config.rounds() ? fmt::format("token rounding {} to {} rows",
                                           toString(config.rounding), config.roundingTile)
                             : std::string("plain top-K"),
             options.seed, double(workspaceBytes) / (1 << 20));

  Stream stream = gpu->createStream();
  const ForwardResult result = moe.forward(stream, args);
  stream.synchronize();
  std::vector<uint16_t> oHost(T * d);
  o.download(std::span(oHost));

  // The reference routes from the logits the GPU used: the router GEMM is
  // checked on its own, and the selection then sees the same fp32 values.
  std::vector<float> usedLogits = inputs.logits;
  if (*source == RouterSource::Weights && T > 0) {
    usedLogits.resize(T * layer->experts);
    gpu->driver().call(gpu->driver().cuMemcpyDtoH, usedLogits.data(), result.routing.logits,
                       usedLogits.size() * sizeof(float));
  }
  const GroupedRows rows = referenceRouting(usedLogits, config, T);
  const std::vector<int32_t> gpuCounts =
      T > 0 ? kernels.downloadCounts(stream, result.routing) : std::vector<int32_t>{};
  const int64_t gpuRows = std::accumulate(gpuCounts.begin(), gpuCounts.end(), int64_t{0});
  int64_t countsDiffer = 0;
  for (size_t e = 0; e < gpuCounts.size(); ++e)
    countsDiffer += gpuCounts[e] != rows.counts[e];

  const std::vector<int64_t> tokens =
      sampleTokens(*layer, rows, options.maxReferenceMacs, options.seed);
  bool passed = true;
  std::optional<Comparison> logitsCheck;
  if (*source == RouterSource::Weights && !tokens.empty()) {
    std::vector<uint16_t> xChecked;
    for (int64_t t : tokens)
      xChecked.insert(xChecked.end(), inputs.upProj.a.begin() + t * d,
                      inputs.upProj.a.begin() + (t + 1) * d);
    const std::vector<double> expected =
        referenceRouterLogits(xChecked, inputs.routerWeights, layer->dtype,
                              static_cast<int64_t>(tokens.size()), d, layer->experts);
    logitsCheck = compareRows(expected, usedLogits, layer->experts, tokens);
    passed = logitsCheck->relativeError <= 1e-4;
  }
  const LayerForwardReference reference = referenceLayerForward(*layer, rows, inputs, tokens);
  const Comparison check = compareForward(reference, oHost, layer->dtype, d);
  passed = passed && check.relativeError <= options.tolerance && countsDiffer == 0;

  fmt::print(out, "  rows: R = {} grouped rows (T*K = {}){}\n", gpuRows, T * config.topK,
             countsDiffer == 0
                 ? ""
                 : fmt::format("; {} experts' counts differ from the reference", countsDiffer));
  if (logitsCheck)
    fmt::print(out, "  router logits X Wr: rel err {:.2e} over {} tokens\n",
               logitsCheck->relativeError, tokens.size());
  fmt::print(out, "  O: {}  rel err {:.2e} over {} of {} tokens (tolerance {})\n",
             passed ? "PASS" : "FAIL", check.relativeError, tokens.size(), T, options.tolerance);

  std::optional<ForwardTimes> times;
  double flops = 0;
  if (options.iters > 0 && T > 0) {
    // route() from logits is timed on the logits the forward used.
    const DeviceBuffer gpuLogits =
        *source == RouterSource::Weights ? uploadNew(*gpu, usedLogits) : DeviceBuffer();
    times = timeForward(ForwardJob{options, *gpu, *layer, moe, *source}, stream, args,
                        *source == RouterSource::Weights ? gpuLogits.pointer() : logits.pointer());
    // 6*T*K*n*d for SwiGLU; with rounding the GEMMs run R rows instead of
    // T*K, so the count uses R (the work done, not the work of top-K).
    flops = gemmFlops(moe.gemm(GemmKind::UpProj).problem, gpuRows) +
            gemmFlops(moe.gemm(GemmKind::DownProj).problem, gpuRows);
    const double tflops = flops / (times->totalMs * 1e-3) / 1e12;
    fmt::print(out,
               "  forward: {:.3f} ms median of {}, {:.1f} TFLOP/s (FLOPs = 2*R*d*u + "
               "2*R*n*d = {:.3g})\n",
               times->totalMs, options.iters, tflops, flops);
    const double stageSum = std::accumulate(times->stageMs.begin(), times->stageMs.end(), 0.0);
    for (int s = 0; s < kStages; ++s)
      fmt::print(out, "    {:<12} {:8.3f} ms  {:5.1f}%\n", kStageNames[s], times->stageMs[s],
                 100.0 * times->stageMs[s] / stageSum);
    const double aggregationBytes = double(gpuRows + T) * d * dtypeBytes(layer->dtype);
    fmt::print(out, "    aggregation reads Y and writes O: {:.0f} GB/s\n",
               aggregationBytes / (times->stageMs[3] * 1e-3) / 1e9);
    fmt::print(out, "    route() alone: top-K + metadata {:.3f} ms", times->routeFromLogitsMs);
    if (times->routeFromWeightsMs > 0)
      fmt::print(out, ", with router logits X Wr {:.3f} ms", times->routeFromWeightsMs);
    if (times->routeRoundedMs > 0)
      fmt::print(out, ", with token rounding {:.3f} ms", times->routeRoundedMs);
    out << "\n";
  }

  if (!options.jsonPath.empty()) {
    std::ofstream json(options.jsonPath);
    if (!json)
      throw Error("cannot write '" + options.jsonPath + "'");
    fmt::print(json,
               "{{\"layer\": \"{}\", \"tokens\": {}, \"experts\": {}, \"hidden\": {}, "
               "\"intermediate\": {}, \"top_k\": {}, \"rounding\": \"{}\", \"routing\": \"{}\", "
               "\"rows\": {}, \"rel_err\": {:.4e}, \"passed\": {}",
               layer->name, T, layer->experts, d, layer->intermediate, config.topK,
               toString(config.rounding),
               options.routingLogits.empty() ? "weights" : options.routingLogits, gpuRows,
               check.relativeError, passed ? "true" : "false");
    if (times) {
      fmt::print(json, ", \"total_ms\": {:.5f}, \"flops\": {:.6e}, \"tflops\": {:.2f}",
                 times->totalMs, flops, flops / (times->totalMs * 1e-3) / 1e12);
      for (int s = 0; s < kStages; ++s)
        fmt::print(json, ", \"{}_ms\": {:.5f}", kStageNames[s], times->stageMs[s]);
      fmt::print(json,
                 ", \"route_from_logits_ms\": {:.5f}, \"route_from_weights_ms\": {:.5f}, "
                 "\"route_rounded_ms\": {:.5f}, \"aggregation_bytes\": {:.6e}",
                 times->routeFromLogitsMs, times->routeFromWeightsMs, times->routeRoundedMs,
                 double(gpuRows + T) * d * dtypeBytes(layer->dtype));
    }
    json << "}\n";
  }
  return passed ? kRunOk : kRunCheckFailed;
}

} // namespace

MoeLayer loadMoeLayer(const Gpu &gpu, KernelCache &cache, TemplateKernelCache &templates,
                      const LayerSpec &layer, const Target &target, bool withRounding) {
  requireForwardGemms(layer);
  auto [upProj, downProj] = loadForwardGemms(gpu, cache, layer, target);
  return makeMoeLayer(gpu, templates, layer, target, std::move(upProj), std::move(downProj),
                      withRounding);
}

int runForwardCommand(const ForwardRunOptions &options, std::ostream &out, std::ostream &err) {
  try {
    return runForward(options, out, err);
  } catch (const std::exception &e) {
    err << "moejit run: error: " << e.what() << "\n";
    return kRunUsage;
  }
}

} // namespace moejit
