#include "runtime/src/run.h"

#include "autotune/tuning_db.h"
#include "moejit/dsl.h"
#include "moejit/error.h"
#include "moejit/knobs.h"
#include "runtime/api/kernel_compiler.h"
#include "runtime/api/layer_module.h"
#include "runtime/src/driver_info.h"
#include "runtime/src/half.h"
#include "compiler/spec/parallel.h"

#include <fmt/format.h>
#include <fmt/ostream.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
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

// A whole input slot, made and uploaded.
DeviceBuffer uploadRandomSlot(const Gpu &gpu, GemmKind kind, const LayerSpec &layer,
                              const GroupedRows &rows, uint64_t seed, OperandSlot slot,
                              int64_t elements, std::vector<uint16_t> &host) {
  host.resize(elements);
  fillRandomOperand(kind, layer, rows, seed, slot, 0, host);
  return uploadNew(gpu, host);
}

// Synchronous copies of part of a buffer (DeviceBuffer copies it whole).
void copyToDevice(const Gpu &gpu, const DeviceBuffer &buffer, size_t offset, const void *host,
                  size_t bytes) {
  if (offset + bytes > buffer.bytes())
    throw Error("device copy past the end of a buffer");
  if (bytes > 0)
    gpu.driver().call(gpu.driver().cuMemcpyHtoD, buffer.pointer() + offset, host, bytes);
}
void copyFromDevice(const Gpu &gpu, const DeviceBuffer &buffer, size_t offset, void *host,
                    size_t bytes) {
  if (offset + bytes > buffer.bytes())
    throw Error("device copy past the end of a buffer");
  if (bytes > 0)
    gpu.driver().call(gpu.driver().cuMemcpyDtoH, host, buffer.pointer() + offset, bytes);
}

bool isNonFinite(DType dtype, uint16_t bits) { return isNonFiniteHalf(dtype, bits); }
bool isNonFinite(DType, float value) { return !std::isfinite(value); }

template <class T> int64_t countNonFinite(const std::vector<T> &values, DType dtype) {
  std::atomic<int64_t> count{0};
  parallelFor(static_cast<int64_t>(values.size()), [&](int64_t begin, int64_t end) {
    int64_t local = 0;
    for (int64_t i = begin; i < end; ++i)
      local += isNonFinite(dtype, values[i]);
    count += local;
  });
  return count;
}

// B of a varlen-M family made by expert (GemmCheckPlan::weightChunks): the
// rest of B poisoned, each chunk made and uploaded, and the reference of
// the checked rows of its experts computed while it is on the host.
ReferenceOutput uploadWeightsByExpert(const Gpu &gpu, DeviceBuffer &b, GemmKind kind,
                                      const LayerSpec &layer, const GroupedRows &rows,
                                      const GemmCheckPlan &plan, HostOperands &operands,
                                      uint64_t seed, uint8_t poison) {
  const OperandLayout &l = plan.layout;
  const int64_t expertElements = l.bElements / layer.experts;
  const std::vector<int64_t> &checked = plan.checkedRows;
  ReferenceOutput reference;
  reference.c.resize(checked.size() * l.cColumns);
  if (l.auxOutRows > 0)
    reference.auxOut.resize(checked.size() * l.auxOutColumns);
  b.fillBytes(poison);
  for (const ExpertRange &chunk : plan.weightChunks) {
    operands.bFirst = chunk.first * expertElements;
    operands.b.resize((chunk.last - chunk.first) * expertElements);
    fillRandomOperand(kind, layer, rows, seed, OperandSlot::B, operands.bFirst, operands.b);
    copyToDevice(gpu, b, operands.bFirst * sizeof(uint16_t), operands.b.data(),
                 operands.b.size() * sizeof(uint16_t));
    // Grouped rows are sorted by expert, so the chunk's checked rows are a
    // contiguous run of the sorted checked rows.
    const auto begin = std::lower_bound(checked.begin(), checked.end(), rows.offsets[chunk.first]);
    const auto end = std::lower_bound(begin, checked.end(), rows.offsets[chunk.last]);
    const size_t first = begin - checked.begin();
    const ReferenceOutput part = referenceGemm(kind, layer, rows, operands, std::span(begin, end));
    std::copy(part.c.begin(), part.c.end(), reference.c.begin() + first * l.cColumns);
    std::copy(part.auxOut.begin(), part.auxOut.end(),
              reference.auxOut.begin() + first * l.auxOutColumns);
  }
  operands.b = {};
  operands.bFirst = 0;
  return reference;
}

// An output read back: whole, or only the checked rows (then row i of
// `values` is checked row i). `compared` are the rows of `values` that hold
// the checked rows, for compareRows.
template <class T> struct ReadBack {
  std::vector<T> values;
  std::vector<int64_t> compared;
};

template <class T>
ReadBack<T> readBack(const Gpu &gpu, const DeviceBuffer &buffer, int64_t columns,
                     const GemmCheckPlan &plan) {
  ReadBack<T> out;
  const std::vector<int64_t> &checked = plan.checkedRows;
  if (!plan.outputsByRows) {
    out.values.resize(buffer.bytes() / sizeof(T));
    buffer.download(std::span(out.values));
    out.compared = checked;
    return out;
  }
  const size_t rowBytes = columns * sizeof(T);
  out.values.resize(checked.size() * columns);
  out.compared.resize(checked.size());
  // One copy per run of consecutive rows.
  for (size_t i = 0; i < checked.size();) {
    size_t j = i + 1;
    while (j < checked.size() && checked[j] == checked[j - 1] + 1)
      ++j;
    copyFromDevice(gpu, buffer, checked[i] * rowBytes, out.values.data() + i * columns,
                   (j - i) * rowBytes);
    i = j;
  }
  for (size_t i = 0; i < checked.size(); ++i)
    out.compared[i] = static_cast<int64_t>(i);
  return out;
}

// A buffer of at least twice the L2 cache: overwriting it evicts what a
// previous launch left there.
size_t l2FlushBytes(const Gpu &gpu) {
  int l2 = 0;
  gpu.driver().call(gpu.driver().cuDeviceGetAttribute, &l2, CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE,
                    gpu.context()->device);
  constexpr size_t kUnknownL2Bytes = size_t(128) << 20;
  return 2 * (l2 > 0 ? size_t(l2) : kUnknownL2Bytes);
}

std::string formatError(const Comparison &comparison) {
  if (comparison.nonFinite > 0)
    return fmt::format("{} non-finite", comparison.nonFinite);
  return fmt::format("{:.2e}", comparison.relativeError);
}

} // namespace

double GemmRunResult::relativeError() const {
  double worst = auxOut ? std::max(c.relativeError, auxOut->relativeError) : c.relativeError;
  return actOnly ? std::max(worst, actOnly->relativeError) : worst;
}

double GemmRunResult::tflopsAt(double ms) const {
  return ms > 0 ? flops / (ms * 1e-3) / 1e12 : 0.0;
}

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
  GemmRunResult result;
  result.plan = planGemmCheck(kind, layer, rows, settings.check, settings.seed);
  const GemmCheckPlan &plan = result.plan;
  const OperandLayout &layout = plan.layout;
  const std::vector<int64_t> &checked = plan.checkedRows;
  const size_t halfBytes = sizeof(uint16_t);
  constexpr uint8_t kPoisonByte = 0xFF; // 0xFFFF: NaN in bf16 and fp16

  HostOperands operands;
  DeviceBuffer a = uploadRandomSlot(gpu, kind, layer, rows, settings.seed, OperandSlot::A,
                                    layout.aElements, operands.a);
  DeviceBuffer auxIn = uploadRandomSlot(gpu, kind, layer, rows, settings.seed, OperandSlot::AuxIn,
                                        layout.auxInElements, operands.auxIn);
  DeviceBuffer b;
  ReferenceOutput reference;
  if (plan.weightsByExpert) {
    b = gpu.allocate(layout.bElements * halfBytes);
    reference = uploadWeightsByExpert(gpu, b, kind, layer, rows, plan, operands, settings.seed,
                                      kPoisonByte);
  } else {
    b = uploadRandomSlot(gpu, kind, layer, rows, settings.seed, OperandSlot::B, layout.bElements,
                         operands.b);
    reference = referenceGemm(kind, layer, rows, operands, checked);
  }
  operands = {}; // the reference is made: free the host inputs before reading back
  DeviceBuffer offsets = uploadNew(gpu, rows.offsets);
  DeviceBuffer gather = uploadNew(gpu, rows.gather);
  DeviceBuffer scale = uploadNew(gpu, rows.scale);
  DeviceBuffer c = gpu.allocate(layout.cRows * layout.cColumns * halfBytes);
  const int64_t auxOutElements = layout.auxOutRows * layout.auxOutColumns;
  DeviceBuffer auxOut =
      gpu.allocate(auxOutElements * (layout.auxOutIsFloat ? sizeof(float) : halfBytes));

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
  setWeightMap(gpu.driver(), problem, target, args);
  setLaunchMaps(gpu.driver(), problem, target, args);
  const LaunchShape shape = launchShape(problem, rows.rows(), target);

  Stream stream = gpu.createStream();
  launchKernel(kernel, shape, args, stream);
  stream.synchronize();

  result.flops = gemmFlops(problem, rows.rows());
  result.checkedRows = static_cast<int64_t>(checked.size());
  result.outputRows = layout.cRows;
  {
    const ReadBack<uint16_t> cHost = readBack<uint16_t>(gpu, c, layout.cColumns, plan);
    result.nonFiniteOutputs = countNonFinite(cHost.values, layer.dtype);
    result.c = compareRows(reference.c, asSpan(cHost.values), layer.dtype, layout.cColumns,
                           cHost.compared);
  }
  // aux_out in the layer's dtype (act(H)), read back and compared.
  auto compareHalfAuxOut = [&] {
    const ReadBack<uint16_t> aux = readBack<uint16_t>(gpu, auxOut, layout.auxOutColumns, plan);
    result.nonFiniteOutputs += countNonFinite(aux.values, layer.dtype);
    return compareRows(reference.auxOut, asSpan(aux.values), layer.dtype, layout.auxOutColumns,
                       aux.compared);
  };
  if (layout.auxOutIsFloat) {
    const ReadBack<float> aux = readBack<float>(gpu, auxOut, layout.auxOutColumns, plan);
    result.nonFiniteOutputs += countNonFinite(aux.values, layer.dtype);
    result.auxOut =
        compareRows(reference.auxOut, asSpan(aux.values), layout.auxOutColumns, aux.compared);
  } else if (auxOutElements > 0) {
    result.auxOut = compareHalfAuxOut();
  }

  // The up-projection again with C = null: act(H) alone must come out the
  // same (the kernel skips H's stores and touches no C).
  KernelArgs actOnlyArgs = args;
  const bool actOnly = kind == GemmKind::UpProj && layer.activation != Activation::None;
  if (actOnly) {
    actOnlyArgs.c = 0;
    setLaunchMaps(gpu.driver(), problem, target, actOnlyArgs);
    auxOut.fillBytes(kPoisonByte);
    launchKernel(kernel, shape, actOnlyArgs, stream);
    stream.synchronize();
    result.actOnly = compareHalfAuxOut();
  }

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
  if (result.actOnly && !(result.actOnly->relativeError <= settings.tolerance))
    failures.push_back(fmt::format("aux_out relative error with C = null {} > {}",
                                   formatError(*result.actOnly), settings.tolerance));
  result.passed = failures.empty();
  for (const std::string &failure : failures)
    result.failure += (result.failure.empty() ? "" : "; ") + failure;

  DeviceBuffer flush;
  if (settings.iters > 0 && settings.flushL2)
    flush = gpu.allocate(l2FlushBytes(gpu));
  // Timed launches (each between its own pair of events); with the
  // act-only variant the two alternate, so that both see the same clocks
  // (a long run heats the GPU and lowers them).
  if (settings.iters > 0) {
    std::vector<const KernelArgs *> variants = {&args};
    if (actOnly)
      variants.push_back(&actOnlyArgs);
    for (int i = 0; i < settings.warmup; ++i)
      for (const KernelArgs *variant : variants)
        launchKernel(kernel, shape, *variant, stream);
    const size_t launches = static_cast<size_t>(settings.iters) * variants.size();
    std::vector<Event> starts, stops;
    for (size_t i = 0; i < launches; ++i) {
      starts.push_back(gpu.createEvent());
      stops.push_back(gpu.createEvent());
    }
    for (size_t i = 0; i < launches; ++i) {
      if (settings.flushL2)
        flush.fillBytesAsync(static_cast<uint8_t>(i), stream); // before the pair: untimed
      starts[i].record(stream);
      launchKernel(kernel, shape, *variants[i % variants.size()], stream);
      stops[i].record(stream);
    }
    stream.synchronize();
    auto median = [&](size_t variant) {
      std::vector<double> times;
      for (size_t i = variant; i < launches; i += variants.size())
        times.push_back(stops[i].millisecondsSince(starts[i]));
      std::nth_element(times.begin(), times.begin() + times.size() / 2, times.end());
      return times[times.size() / 2];
    };
    result.medianMs = median(0);
    if (actOnly)
      result.actOnlyMs = median(1);
  }
  return result;
}

namespace {

struct RunContext {
  const RunOptions &options;
  std::ostream &out;
  std::ostream &err;
  KernelCache &cache;
  std::vector<KernelRunRecord> &records; // every kernel run, for --json
};

std::string describeLayer(const LayerSpec &layer) {
  return fmt::format("E={} d={} n={} K={} {} {} {}", layer.experts, layer.hidden,
                     layer.intermediate, layer.router.topK, toString(layer.activation),
                     toString(layer.gateUp), toString(layer.dtype));
}

// Runs every compiled GEMM of one layer, appending to run.records; returns
// false if any failed.
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
  bool jitCompiled = false;
  Module module = loadModule(gpu, *compiled.artifact, &jitCompiled);
  const size_t kernels = compiled.problems.size();
  const std::string origin = compiled.compiled
                                 ? fmt::format("compiled in {:.0f} ms", compiled.compileMs)
                                 : std::string("from the kernel cache");
  fmt::print(run.out, "  {} kernel{} for {} {}, loaded from {} in {:.1f} ms\n", kernels,
             kernels == 1 ? "" : "s", target.arch, origin,
             jitCompiled ? "PTX (driver JIT)" : "the cubin", millisecondsSince(loadStart));

  GemmRunSettings settings;
  settings.seed = options.seed;
  settings.iters = options.iters;
  settings.warmup = options.warmup;
  settings.flushL2 = options.flushL2;
  settings.check = options.check;
  settings.tolerance = options.tolerance;
  if (options.iters > 0 && options.flushL2)
    fmt::print(run.out,
               "  timing: median of {} launches, {} MB (2x the L2) overwritten before "
               "each\n",
               options.iters, l2FlushBytes(gpu) >> 20);

  bool allPassed = true;
  for (size_t i = 0; i < compiled.problems.size(); ++i) {
    const GemmProblem &problem = compiled.problems[i];
    Function kernel = module.function(compiled.kernelNames[i]);
    KernelRunRecord &record = run.records.emplace_back();
    record.layer = layer.name;
    record.problem = problem;
    record.path = selectKernelPath(problem, target);
    record.rows = rows.rows();
    record.timed = options.iters > 0;
    record.result = runGemm(gpu, kernel, layer, problem, target, rows, settings);
    const GemmRunResult &result = record.result;
    allPassed = allPassed && result.passed;
    std::string line = fmt::format("  {:<10} {}  err C {}", toString(problem.kind),
                                   result.passed ? "PASS" : "FAIL", formatError(result.c));
    if (result.auxOut)
      line += fmt::format(" {} {}", problem.kind == GemmKind::DH ? "dS" : "act",
                          formatError(*result.auxOut));
    if (result.checkedRows < result.outputRows)
      line +=
          fmt::format("  (checked {} of {} output rows)", result.checkedRows, result.outputRows);
    if (options.iters > 0)
      line += fmt::format("  {:.3f} ms  {:.1f} TFLOP/s", result.medianMs, result.tflops());
    if (result.actOnly) {
      line += fmt::format("\n  {:<10} {}  act only (C = null): err act {}", "",
                          result.passed ? "PASS" : "FAIL", formatError(*result.actOnly));
      if (options.iters > 0)
        line += fmt::format("  {:.3f} ms  {:.1f} TFLOP/s", result.actOnlyMs,
                            result.actOnlyTflops());
    }
    run.out << line << "\n";
    if (!result.passed)
      run.out << "             " << result.failure << "\n";
  }
  return allPassed;
}

// Writes --json when asked; false (with a message) when the file cannot be
// written.
bool writeJson(const RunContext &run, const std::string &device, const Target &target,
               const RoutingMethod &routing) {
  if (run.options.jsonPath.empty())
    return true;
  std::ofstream file(run.options.jsonPath, std::ios::binary);
  file << runResultsJson(device, target.arch, run.options, routing.describe(), run.records);
  if (!file) {
    run.err << "moejit run: error: cannot write '" << run.options.jsonPath << "'\n";
    return false;
  }
  return true;
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

  // Open schedules from the tuning database when MOEJIT_TUNING_DB names one.
  TuningDb tuned;
  try {
    tuned = tuningDbOfKnobs(knobs);
  } catch (const Error &e) {
    run.err << "moejit run: error: " << e.what() << "\n";
    return kRunUsage;
  }
  int failure = kRunOk;
  std::optional<Spec> spec = readRunSpec(options.file, target, run.err, failure, &tuned);
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
    return writeJson(run, "none", target, routing) ? kRunOk : kRunUsage;
  }
  fmt::print(run.out, "GPU: {} ({} SMs), target {}\n", gpu->properties().name,
             gpu->properties().smCount, target.arch);

  bool allPassed = true;
  for (size_t i = 0; i < layers.size(); ++i)
    allPassed = runLayer(run, *gpu, target, *layers[i], compiled[i], routing) && allPassed;
  run.out << (allPassed ? "all kernels passed\n" : "some kernels FAILED\n");
  if (!writeJson(run, gpu->properties().name, target, routing))
    return kRunUsage;
  return allPassed ? kRunOk : kRunCheckFailed;
}

} // namespace

std::string runResultsJson(const std::string &device, const std::string &arch,
                           const RunOptions &options, const std::string &routing,
                           const std::vector<KernelRunRecord> &kernels) {
  // Keys in the schema's order; non-finite numbers are written as null.
  using json = nlohmann::ordered_json;
  json list = json::array();
  for (const KernelRunRecord &k : kernels) {
    const GemmRunResult &r = k.result;
    list.push_back({{"layer", k.layer},
                    {"gemm", std::string(toString(k.problem.kind))},
                    {"path", k.path == KernelPath::Hopper ? "hopper" : "portable"},
                    {"rows", k.rows},
                    {"m", k.problem.m},
                    {"n", k.problem.n},
                    {"k", k.problem.k},
                    {"flops", r.flops},
                    {"median_ms", k.timed ? json(r.medianMs) : json(nullptr)},
                    {"tflops", k.timed ? json(r.tflops()) : json(nullptr)},
                    {"act_only_median_ms",
                     k.timed && r.actOnly ? json(r.actOnlyMs) : json(nullptr)},
                    {"act_only_tflops",
                     k.timed && r.actOnly ? json(r.actOnlyTflops()) : json(nullptr)},
                    {"rel_err", r.relativeError()},
                    {"non_finite", r.nonFiniteOutputs},
                    {"pass", r.passed}});
  }
  const json document = {{"device", device},         {"arch", arch},
                         {"tokens", options.tokens}, {"routing", routing},
                         {"seed", options.seed},     {"kernels", std::move(list)}};
  return document.dump(2) + "\n";
}

std::optional<Spec> readRunSpec(const std::string &file, const Target &target, std::ostream &err,
                                int &failure, const ScheduleSource *tuned) {
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    err << "moejit run: error: cannot read '" << file << "'\n";
    failure = kRunUsage;
    return std::nullopt;
  }
  std::ostringstream text;
  text << in.rdbuf();
  Diagnostics diags(text.str());
  std::optional<Spec> spec = parseSpec(text.str(), file, target, diags, tuned);
  if (!diags.all().empty())
    err << diags.render();
  if (!spec)
    failure = kRunBadInput;
  return spec;
}

int runCommand(const RunOptions &options, std::ostream &out, std::ostream &err) {
  try {
    KernelCache cache(KernelCacheOptions::fromKnobs(Knobs::fromEnvironment()));
    std::vector<KernelRunRecord> records;
    return runSpec(RunContext{options, out, err, cache, records});
  } catch (const std::exception &e) {
    err << "moejit run: error: " << e.what() << "\n";
    return kRunUsage;
  }
}

} // namespace moejit
