#include "runtime/src/run.h"

#include "moejit/dsl.h"
#include "moejit/error.h"
#include "moejit/knobs.h"
#include "runtime/api/kernel_compiler.h"
#include "runtime/api/layer_module.h"
#include "runtime/src/driver_info.h"
#include "runtime/src/half.h"

#include <fmt/format.h>
#include <fmt/ostream.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <ostream>
#include <sstream>

namespace moejit {

namespace {

double millisecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
      .count();
}

template <class T> std::span<const T> asSpan(const std::vector<T> &v) { return v; }

// A host vector uploaded into a new device buffer (an empty one stays null).
template <class T> DeviceBuffer uploadNew(const Gpu &gpu, const std::vector<T> &host) {
  DeviceBuffer buffer = gpu.allocate(host.size() * sizeof(T));
  buffer.upload(asSpan(host));
  return buffer;
}

int64_t countNonFinite(const std::vector<uint16_t> &values, DType dtype) {
  return std::count_if(values.begin(), values.end(),
                       [&](uint16_t bits) { return isNonFiniteHalf(dtype, bits); });
}

std::string formatError(const Comparison &comparison) {
  if (comparison.nonFinite > 0)
    return fmt::format("{} non-finite", comparison.nonFinite);
  return fmt::format("{:.2e}", comparison.relativeError);
}

} // namespace

double gemmFlops(const GemmProblem &problem, int64_t totalRows) {
  const double fixed = problem.varlen == Varlen::M ? double(problem.n) * double(problem.k)
                                                   : double(problem.m) * double(problem.n);
  return 2.0 * fixed * double(totalRows);
}

CompiledLayer compileLayer(KernelCache &cache, const LayerSpec &layer, const Target &target,
                           std::optional<GemmKind> only) {
  CompiledLayer compiled;
  compiled.problems = layerProblems(layer, only);
  compiled.key.emplace(moduleKey(compiled.problems, target));
  const std::unique_ptr<KernelCompiler> compiler = makeDefaultKernelCompiler();
  CachedModule cached;
  try {
    cached = compileThroughCache(cache, *compiled.key, compiled.problems, target, compiler.get());
  } catch (const Error &e) {
    throw Error("compiling layer '" + layer.name + "' for " + target.arch + " failed:\n" + e.what(),
                e.kind());
  }
  compiled.compileMs = cached.compileMs;
  compiled.compiled = cached.compiled;
  compiled.kernelNames = cached.artifact->kernelNames;
  compiled.ptx = cached.artifact->ptx;
  compiled.artifact = std::move(cached.artifact);
  return compiled;
}

CompiledLayer compileLayer(const LayerSpec &layer, const Target &target,
                           std::optional<GemmKind> only) {
  KernelCache memoryOnly{KernelCacheOptions{}};
  return compileLayer(memoryOnly, layer, target, only);
}

GemmRunResult runGemm(const Gpu &gpu, Function &kernel, const LayerSpec &layer,
                      const GemmProblem &problem, const Target &target, const GroupedRows &rows,
                      const GemmRunSettings &settings) {
  const GemmKind kind = problem.kind;
  const OperandLayout layout = operandLayout(kind, layer, rows);
  const HostOperands operands = randomOperands(kind, layer, rows, settings.seed);
  const size_t halfBytes = sizeof(uint16_t);

  DeviceBuffer a = uploadNew(gpu, operands.a);
  DeviceBuffer b = uploadNew(gpu, operands.b);
  DeviceBuffer auxIn = uploadNew(gpu, operands.auxIn);
  DeviceBuffer offsets = uploadNew(gpu, rows.offsets);
  DeviceBuffer gather = uploadNew(gpu, rows.gather);
  DeviceBuffer scale = uploadNew(gpu, rows.scale);
  DeviceBuffer c = gpu.allocate(layout.cRows * layout.cColumns * halfBytes);
  const int64_t auxOutElements = layout.auxOutRows * layout.auxOutColumns;
  DeviceBuffer auxOut =
      gpu.allocate(auxOutElements * (layout.auxOutIsFloat ? sizeof(float) : halfBytes));

  constexpr uint8_t kPoisonByte = 0xFF; // 0xFFFF: NaN in bf16 and fp16
  c.fillBytes(kPoisonByte);
  auxOut.fillBytes(layout.auxOutIsFloat ? 0 : kPoisonByte);

  KernelArgs args;
  args.a = a.pointer();
  args.b = b.pointer();
  args.c = c.pointer();
  args.auxIn = auxIn.pointer();
  args.auxOut = auxOut.pointer();
  args.offsets = offsets.pointer();
  args.gather = gather.pointer();
  args.scale = scale.pointer();
  args.totalRows = static_cast<int32_t>(rows.rows());
  const LaunchShape shape = launchShape(problem, rows.rows(), target);

  Stream stream = gpu.createStream();
  launchKernel(kernel, shape, args, stream);
  stream.synchronize();

  GemmRunResult result;
  result.flops = gemmFlops(problem, rows.rows());
  std::vector<uint16_t> cHost(layout.cRows * layout.cColumns);
  c.download(std::span(cHost));
  result.nonFiniteOutputs = countNonFinite(cHost, layer.dtype);
  std::vector<uint16_t> auxHalf;
  std::vector<float> auxFloat;
  if (layout.auxOutIsFloat) {
    auxFloat.resize(auxOutElements);
    auxOut.download(std::span(auxFloat));
    result.nonFiniteOutputs +=
        std::count_if(auxFloat.begin(), auxFloat.end(), [](float v) { return !std::isfinite(v); });
  } else if (auxOutElements > 0) {
    auxHalf.resize(auxOutElements);
    auxOut.download(std::span(auxHalf));
    result.nonFiniteOutputs += countNonFinite(auxHalf, layer.dtype);
  }

  const std::vector<int64_t> checked =
      sampleOutputRows(kind, layer, rows, settings.maxReferenceMacs, settings.seed);
  result.checkedRows = static_cast<int64_t>(checked.size());
  result.outputRows = layout.cRows;
  const ReferenceOutput reference = referenceGemm(kind, layer, rows, operands, checked);
  result.c = compareRows(reference.c, asSpan(cHost), layer.dtype, layout.cColumns, checked);
  if (layout.auxOutIsFloat)
    result.auxOut = compareRows(reference.auxOut, asSpan(auxFloat), layout.auxOutColumns, checked);
  else if (auxOutElements > 0)
    result.auxOut =
        compareRows(reference.auxOut, asSpan(auxHalf), layer.dtype, layout.auxOutColumns, checked);

  std::vector<std::string> failures;
  if (result.nonFiniteOutputs > 0)
    failures.push_back(fmt::format("{} output elements are NaN/inf or were never written",
                                   result.nonFiniteOutputs));
  if (!(result.c.relativeError <= settings.tolerance))
    failures.push_back(
        fmt::format("C relative error {} > {}", formatError(result.c), settings.tolerance));
  if (result.auxOut && !(result.auxOut->relativeError <= settings.tolerance))
    failures.push_back(fmt::format("aux_out relative error {} > {}", formatError(*result.auxOut),
                                   settings.tolerance));
  result.passed = failures.empty();
  for (const std::string &failure : failures)
    result.failure += (result.failure.empty() ? "" : "; ") + failure;

  if (settings.iters > 0) {
    for (int i = 0; i < settings.warmup; ++i)
      launchKernel(kernel, shape, args, stream);
    std::vector<Event> starts, stops;
    for (int i = 0; i < settings.iters; ++i) {
      starts.push_back(gpu.createEvent());
      stops.push_back(gpu.createEvent());
    }
    for (int i = 0; i < settings.iters; ++i) {
      starts[i].record(stream);
      launchKernel(kernel, shape, args, stream);
      stops[i].record(stream);
    }
    stream.synchronize();
    std::vector<double> times(settings.iters);
    for (int i = 0; i < settings.iters; ++i)
      times[i] = stops[i].millisecondsSince(starts[i]);
    std::nth_element(times.begin(), times.begin() + times.size() / 2, times.end());
    result.medianMs = times[times.size() / 2];
  }
  return result;
}

namespace {

struct RunContext {
  const RunOptions &options;
  std::ostream &out;
  std::ostream &err;
  KernelCache &cache;
};

std::string describeLayer(const LayerSpec &layer) {
  return fmt::format("E={} d={} n={} K={} {} {} {}", layer.experts, layer.hidden,
                     layer.intermediate, layer.router.topK, toString(layer.activation),
                     toString(layer.gateUp), toString(layer.dtype));
}

// Runs every compiled GEMM of one layer; returns false if any failed.
bool runLayer(const RunContext &run, const Gpu &gpu, const Target &target, const LayerSpec &layer,
              const CompiledLayer &compiled, const RoutingMethod &routing) {
  const RunOptions &options = run.options;
  const GroupedRows rows =
      groupByExpert(route(routing, options.tokens, layer.experts, layer.router.topK, options.seed));
  const int64_t emptyExperts = std::count(rows.counts.begin(), rows.counts.end(), 0);
  fmt::print(run.out, "layer {} ({}): T={} R={} routing {} seed {}, {} of {} experts empty\n",
             layer.name, describeLayer(layer), options.tokens, rows.rows(), routing.describe(),
             options.seed, emptyExperts, layer.experts);

  const auto loadStart = std::chrono::steady_clock::now();
  LoadedModule loaded = loadModule(gpu, run.cache, *compiled.key, *compiled.artifact);
  Module &module = loaded.module;
  const size_t kernels = compiled.problems.size();
  const std::string origin = compiled.compiled
                                 ? fmt::format("compiled in {:.0f} ms", compiled.compileMs)
                                 : std::string("from the kernel cache");
  fmt::print(run.out, "  {} kernel{} for {} {}, {} in {:.1f} ms\n", kernels,
             kernels == 1 ? "" : "s", target.arch, origin,
             loaded.linkedPtx ? "linked and loaded" : "cubin loaded", millisecondsSince(loadStart));

  GemmRunSettings settings;
  settings.seed = options.seed;
  settings.iters = options.iters;
  settings.warmup = options.warmup;
  settings.maxReferenceMacs = options.maxReferenceMacs;
  settings.tolerance = options.tolerance;

  bool allPassed = true;
  for (size_t i = 0; i < compiled.problems.size(); ++i) {
    const GemmProblem &problem = compiled.problems[i];
    Function kernel = module.function(compiled.kernelNames[i]);
    const GemmRunResult result = runGemm(gpu, kernel, layer, problem, target, rows, settings);
    allPassed = allPassed && result.passed;
    std::string line = fmt::format("  {:<10} {}  err C {}", toString(problem.kind),
                                   result.passed ? "PASS" : "FAIL", formatError(result.c));
    if (result.auxOut)
      line += fmt::format(" {} {}", problem.kind == GemmKind::DH ? "dS" : "act",
                          formatError(*result.auxOut));
    if (result.checkedRows < result.outputRows)
      line +=
          fmt::format("  (checked {} of {} output rows)", result.checkedRows, result.outputRows);
    if (options.iters > 0) {
      const double tflops =
          result.medianMs > 0 ? result.flops / (result.medianMs * 1e-3) / 1e12 : 0.0;
      line += fmt::format("  {:.3f} ms  {:.1f} TFLOP/s", result.medianMs, tflops);
    }
    run.out << line << "\n";
    if (!result.passed)
      run.out << "             " << result.failure << "\n";
  }
  return allPassed;
}

int runSpec(const RunContext &run) {
  const RunOptions &options = run.options;
  if (options.tokens < 0) {
    run.err << "moejit run: error: --tokens must be 0 or more\n";
    return kRunUsage;
  }
  if (options.iters < 0 || options.warmup < 0) {
    run.err << "moejit run: error: --iters must be 0 or more\n";
    return kRunUsage;
  }
  std::optional<GemmKind> onlyGemm;
  if (!options.gemm.empty()) {
    onlyGemm = parseGemmKind(options.gemm);
    if (!onlyGemm) {
      run.err << "moejit run: error: unknown grouped GEMM '" << options.gemm
              << "'; use up_proj, down_proj, dh, dw1, dw2 or dx\n";
      return kRunUsage;
    }
  }
  const RoutingMethod routing = RoutingMethod::parse(options.routing);
  const Knobs knobs = Knobs::fromEnvironment();
  Target target;
  try {
    target = runTarget(options.arch, knobs);
  } catch (const std::invalid_argument &e) {
    run.err << "moejit run: error: " << e.what() << "\n";
    return kRunUsage;
  }

  int failure = kRunOk;
  std::optional<Spec> spec = readRunSpec(options.file, target, run.err, failure);
  if (!spec)
    return failure;

  std::vector<const LayerSpec *> layers;
  for (const LayerSpec &layer : spec->layers)
    if (options.layer.empty() || layer.name == options.layer)
      layers.push_back(&layer);
  if (layers.empty()) {
    run.err << "moejit run: error: " << options.file << " has no layer '" << options.layer << "'\n";
    return kRunUsage;
  }

  std::vector<CompiledLayer> compiled;
  size_t kernels = 0, cachedKernels = 0;
  for (const LayerSpec *layer : layers) {
    try {
      compiled.push_back(compileLayer(run.cache, *layer, target, onlyGemm));
    } catch (const Error &e) {
      run.err << "moejit run: error: " << e.what() << "\n";
      return kRunBadInput;
    }
    kernels += compiled.back().problems.size();
    if (!compiled.back().compiled)
      cachedKernels += compiled.back().problems.size();
  }

  std::optional<Gpu> gpu;
  try {
    gpu.emplace(knobs.cudaDriver);
  } catch (const Error &e) {
    if (e.kind() != ErrorKind::NoGpu)
      throw;
    fmt::print(run.out,
               "no GPU: compiled {} kernel{} to PTX for {} ({} from the kernel cache), cannot "
               "run them here\n  ({})\n",
               kernels, kernels == 1 ? "" : "s", target.arch, cachedKernels, e.what());
    return kRunOk;
  }
  fmt::print(run.out, "GPU: {} ({} SMs), target {}\n", gpu->properties().name,
             gpu->properties().smCount, target.arch);

  bool allPassed = true;
  for (size_t i = 0; i < layers.size(); ++i)
    allPassed = runLayer(run, *gpu, target, *layers[i], compiled[i], routing) && allPassed;
  run.out << (allPassed ? "all kernels passed\n" : "some kernels FAILED\n");
  return allPassed ? kRunOk : kRunCheckFailed;
}

} // namespace

std::optional<Spec> readRunSpec(const std::string &file, const Target &target, std::ostream &err,
                                int &failure) {
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    err << "moejit run: error: cannot read '" << file << "'\n";
    failure = kRunUsage;
    return std::nullopt;
  }
  std::ostringstream text;
  text << in.rdbuf();
  Diagnostics diags(text.str());
  std::optional<Spec> spec = parseSpec(text.str(), file, target, diags);
  if (!diags.all().empty())
    err << diags.render();
  if (!spec)
    failure = kRunBadInput;
  return spec;
}

int runCommand(const RunOptions &options, std::ostream &out, std::ostream &err) {
  try {
    KernelCache cache(KernelCacheOptions::fromKnobs(Knobs::fromEnvironment()));
    return runSpec(RunContext{options, out, err, cache});
  } catch (const std::exception &e) {
    err << "moejit run: error: " << e.what() << "\n";
    return kRunUsage;
  }
}

} // namespace moejit
