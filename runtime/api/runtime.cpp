// The public C++ API (moejit/moejit.h) over the runtime core, the kernel
// cache and the KernelCompiler seam. No compiler header is included here.
#include "moejit/moejit.h"

#include "moejit/knobs.h"
#include "moejit/problem.h"
#include "autotune/tuning_db.h"
#include "compiler/spec/build_once.h"
#include "runtime/api/kernel_compiler.h"
#include "runtime/api/launch_check.h"
#include "runtime/api/layer_module.h"
#include "runtime/cache/kernel_cache.h"
#include "runtime/layer/moe_layer.h"
#include "runtime/src/device.h"
#include "runtime/src/driver_info.h"
#include "runtime/src/module.h"
#include "templates/nvrtc.h"
#include "templates/template_compiler.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <exception>
#include <fstream>
#include <future>
#include <mutex>
#include <sstream>

namespace moejit {

Spec parseSpecText(std::string_view text, const Target &target, std::string_view filename,
                   const ScheduleSource *tuned) {
  Diagnostics diags{std::string(text)};
  std::optional<Spec> spec = parseSpec(text, filename, target, diags, tuned);
  if (!spec)
    throw Error(diags.render());
  return std::move(*spec);
}

Spec parseSpecFile(const std::string &path, const Target &target, const ScheduleSource *tuned) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw Error("cannot read '" + path + "': " + std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  return parseSpecText(text.str(), target, path, tuned);
}

void resolveSpecOrThrow(Spec &spec, const Target &target, const ScheduleSource *tuned) {
  Diagnostics diags;
  if (!resolveSpec(spec, target, diags, tuned))
    throw Error(diags.render());
}

namespace detail {

// One grouped GEMM of a loaded module. Owned by its LoadedLayer; a
// GroupedGemm holds it through an aliasing pointer that keeps the layer's
// module loaded.
struct LoadedGemm {
  GemmProblem problem;
  Function function;
  Target target;
  GemmOperands operands;
  CUcontext context = nullptr;
  WeightMapCache weightMap;
  unsigned gridCap = 0; // persistentGridCap, asked at load
};

struct LoadedLayer {
  Module module;
  std::vector<LoadedGemm> gemms;
};

struct DeviceMemoryState {
  Gpu gpu;
  DeviceBuffer buffer;
};

struct StreamState {
  Gpu gpu;
  Stream stream;
};

struct LoadedMoeLayer {
  Gpu gpu;
  internal::MoeLayer layer;
};

struct RuntimeState {
  Knobs knobs;
  Target target;
  int device = 0;
  std::unique_ptr<KernelCompiler> compiler;
  std::unique_ptr<KernelCache> cache;
  TuningDb tuningDb; // open schedules of the specs this runtime reads

  mutable std::mutex gpuMutex;
  mutable std::optional<Gpu> gpu;

  // Loaded modules by cache key, built once however many threads ask.
  BuildOnce<std::string, LoadedLayer> layers;
  // Layers already loaded, by value: a repeated kernels() call skips the
  // cache key (canonical JSON + hash, tens of microseconds).
  std::mutex layersMutex; // guards loadedLayers
  std::vector<std::pair<LayerSpec, std::shared_ptr<const LoadedLayer>>> loadedLayers;
  std::atomic<uint64_t> modulesLoaded{0}, ptxLinks{0};

  // NVRTC and its compiled routing kernels, loaded on the first layer().
  std::mutex templatesMutex;
  std::unique_ptr<TemplateKernelCache> templates;
  // Forward layers by their spec and whether they route with rounding.
  BuildOnce<std::pair<LayerSpec, bool>, LoadedMoeLayer> moeLayers;

  explicit RuntimeState(const RuntimeOptions &options);

  // Opens the GPU on first use (Error(NoGpu) without one; retried next time)
  // and makes its context current on the calling thread.
  const Gpu &openGpu() const;
  std::shared_ptr<const LoadedLayer> loadLayer(const CacheKey &key,
                                               const std::vector<GemmProblem> &problems);
  std::shared_ptr<const LoadedLayer> buildLayer(const CacheKey &key,
                                                const std::vector<GemmProblem> &problems);
  LayerKernels kernels(const LayerSpec &layer);
  TemplateKernelCache &templateCache();
  std::shared_ptr<const LoadedMoeLayer> buildMoeLayer(const LayerSpec &layer, bool withRounding);
  MoeLayer layer(const LayerSpec &layer, bool withRounding);
  DeviceMemory allocate(size_t bytes) const;
  CudaStream createStream() const;
};

RuntimeState::RuntimeState(const RuntimeOptions &options)
    : knobs(Knobs::fromEnvironment()), device(options.device),
      compiler(makeDefaultKernelCompiler()) {
  if (options.cacheDir)
    knobs.cacheDir = *options.cacheDir;
  if (options.strict)
    knobs.strict = *options.strict;
  if (!compiler)
    knobs.strict = true;
  if (!options.cudaDriver.empty())
    knobs.cudaDriver = options.cudaDriver;
  try {
    target = runTarget(options.arch, knobs);
  } catch (const std::invalid_argument &e) {
    throw Error(e.what());
  }
  if (options.smCount < 0 || options.smCount > 1024)
    throw Error("RuntimeOptions::smCount must be 0 (the GPU's) or 1 to 1024, got " +
                std::to_string(options.smCount));
  if (options.smCount > 0)
    target.smCount = options.smCount;
  KernelCacheOptions cacheOptions = KernelCacheOptions::fromKnobs(knobs);
  cacheOptions.maxBytes = options.cacheMaxBytes;
  cache = std::make_unique<KernelCache>(std::move(cacheOptions));
  if (options.tuningDb)
    knobs.tuningDb = *options.tuningDb;
  tuningDb = tuningDbOfKnobs(knobs);
}

const Gpu &RuntimeState::openGpu() const {
  std::lock_guard lock(gpuMutex);
  if (!gpu)
    gpu.emplace(knobs.cudaDriver, device);
  else
    gpu->makeCurrent();
  return *gpu;
}

std::shared_ptr<const LoadedLayer>
RuntimeState::buildLayer(const CacheKey &key, const std::vector<GemmProblem> &problems) {
  const Gpu &device = openGpu();
  const CachedModule cached = compileThroughCache(*cache, key, problems, target, compiler.get());
  bool jitCompiled = false;
  Module module = loadModule(device, *cached.artifact, &jitCompiled);
  ++modulesLoaded;
  if (jitCompiled)
    ++ptxLinks;
  auto layer = std::make_shared<LoadedLayer>(LoadedLayer{std::move(module), {}});
  layer->gemms.reserve(problems.size());
  for (size_t i = 0; i < problems.size(); ++i) {
    Function function = layer->module.function(cached.artifact->kernelNames[i]);
    // Raised and asked once here, so that launches from many threads never
    // touch the Function.
    const LaunchShape shape = launchShape(problems[i], 1, target);
    function.reserveDynamicShared(shape.sharedBytes);
    const unsigned gridCap = persistentGridCap(function, shape);
    layer->gemms.push_back(LoadedGemm{problems[i], std::move(function), target,
                                      requiredOperands(problems[i]), device.context()->context,
                                      {}, gridCap});
  }
  return layer;
}

std::shared_ptr<const LoadedLayer>
RuntimeState::loadLayer(const CacheKey &key, const std::vector<GemmProblem> &problems) {
  return layers.get(key.hex(), [&] { return buildLayer(key, problems); });
}

LayerKernels RuntimeState::kernels(const LayerSpec &layer) {
  std::shared_ptr<const LoadedLayer> loaded;
  {
    std::lock_guard lock(layersMutex);
    for (const auto &[spec, known] : loadedLayers)
      if (spec == layer)
        loaded = known;
  }
  if (!loaded) {
    const std::vector<GemmProblem> problems = layerProblems(layer);
    loaded = loadLayer(moduleKey(problems, target), problems);
    std::lock_guard lock(layersMutex);
    if (std::none_of(loadedLayers.begin(), loadedLayers.end(),
                     [&](const auto &known) { return known.first == layer; }))
      loadedLayers.emplace_back(layer, loaded);
  }
  LayerKernels kernels;
  kernels.layerName_ = layer.name;
  for (const LoadedGemm &gemm : loaded->gemms)
    kernels.gemms_.push_back(GroupedGemm(std::shared_ptr<const LoadedGemm>(loaded, &gemm)));
  return kernels;
}

TemplateKernelCache &RuntimeState::templateCache() {
  std::lock_guard lock(templatesMutex);
  if (!templates)
    templates = makeTemplateKernelCache(knobs, *cache, target);
  return *templates;
}

std::shared_ptr<const LoadedMoeLayer> RuntimeState::buildMoeLayer(const LayerSpec &layer,
                                                                  bool withRounding) {
  const Gpu *device = nullptr;
  try {
    device = &openGpu();
  } catch (const Error &e) {
    if (e.kind() != ErrorKind::NoGpu)
      throw;
    throw Error("Runtime::layer('" + layer.name + "'): the layer forward needs a GPU: " + e.what(),
                ErrorKind::NoGpu);
  }
  // One module for both GEMMs, shared with kernels() of a layer that lists
  // only these two; precompile() fills it too.
  const std::vector<GemmProblem> problems = forwardProblems(layer);
  const std::shared_ptr<const LoadedLayer> gemms = loadLayer(moduleKey(problems, target), problems);
  const std::shared_ptr<const Module> module(gemms, &gemms->module);
  auto kernel = [&](size_t i) {
    return internal::GroupedGemmKernel{gemms->gemms[i].problem, module, gemms->gemms[i].function};
  };
  return std::make_shared<const LoadedMoeLayer>(
      LoadedMoeLayer{*device, internal::makeMoeLayer(*device, templateCache(), layer, target,
                                                     kernel(0), kernel(1), withRounding)});
}

MoeLayer RuntimeState::layer(const LayerSpec &layer, bool withRounding) {
  internal::requireForwardGemms(layer);
  return MoeLayer(moeLayers.get(std::pair(layer, withRounding),
                                [&] { return buildMoeLayer(layer, withRounding); }));
}

DeviceMemory RuntimeState::allocate(size_t bytes) const {
  const Gpu &device = openGpu();
  DeviceMemory memory;
  memory.state_ =
      std::make_unique<DeviceMemoryState>(DeviceMemoryState{device, device.allocate(bytes)});
  return memory;
}

CudaStream RuntimeState::createStream() const {
  const Gpu &device = openGpu();
  CudaStream stream;
  stream.state_ = std::make_unique<StreamState>(StreamState{device, device.createStream()});
  return stream;
}

} // namespace detail

namespace {

CUdeviceptr devicePointer(const void *pointer) {
  return static_cast<CUdeviceptr>(reinterpret_cast<uintptr_t>(pointer));
}

} // namespace

// GroupedGemm

GemmKind GroupedGemm::kind() const { return gemm_->problem.kind; }
const std::string &GroupedGemm::kernelName() const { return gemm_->function.name(); }
GemmOperands GroupedGemm::operands() const { return gemm_->operands; }

void GroupedGemm::launch(const GemmArgs &args, void *stream) const {
  const detail::LoadedGemm &gemm = *gemm_;
  checkLaunchArgs(gemm.problem, args, gemm.function.name());
  const LaunchShape shape = launchShape(gemm.problem, args.totalRows, gemm.target);
  for (unsigned extent : shape.grid)
    if (extent == 0)
      return;
  CUdeviceptr a = devicePointer(args.a), b = devicePointer(args.b), c = devicePointer(args.c),
              auxIn = devicePointer(args.auxIn), auxOut = devicePointer(args.auxOut),
              offsets = devicePointer(args.offsets), gather = devicePointer(args.gather),
              scale = devicePointer(args.scale);
  int32_t totalRows = static_cast<int32_t>(args.totalRows);
  KernelArgs mapped;
  mapped.a = a;
  mapped.b = b;
  mapped.c = c;
  mapped.auxOut = auxOut;
  mapped.totalRows = totalRows;
  gemm.weightMap.set(gemm.function.driver(), gemm.problem, gemm.target, mapped);
  setLaunchMaps(gemm.function.driver(), gemm.problem, gemm.target, mapped);
  void *params[] = {&a,
                    &b,
                    &c,
                    &auxIn,
                    &auxOut,
                    &offsets,
                    &gather,
                    &scale,
                    &totalRows,
                    &mapped.weightMap,
                    &mapped.activationMap,
                    &mapped.outputMap,
                    &mapped.auxMap};
  static_assert(std::size(params) == static_cast<size_t>(KernelArg::Count));
  const CudaDriver &cu = gemm.function.driver();
  auto enqueue = [&] {
    return cu.cuLaunchKernel.fn(gemm.function.handle(), std::min(shape.grid[0], gemm.gridCap),
                                shape.grid[1], shape.grid[2],
                                shape.block[0], shape.block[1], shape.block[2], shape.sharedBytes,
                                static_cast<CUstream>(stream), params, nullptr);
  };
  CUresult result = enqueue();
  // A host thread with no current context (one that never touched CUDA):
  // make the device's primary context, the one the CUDA runtime uses, current.
  if (result == CUDA_ERROR_INVALID_CONTEXT) {
    cu.call(cu.cuCtxSetCurrent, gemm.context);
    result = enqueue();
  }
  if (result != CUDA_SUCCESS)
    throw Error("cuLaunchKernel of '" + gemm.function.name() + "' (" +
                    std::string(toString(gemm.problem.kind)) + ", " +
                    std::to_string(args.totalRows) + " rows) failed: " + cu.describe(result),
                ErrorKind::CudaCall);
}

// LayerKernels

bool LayerKernels::has(GemmKind kind) const {
  for (const GroupedGemm &gemm : gemms_)
    if (gemm.kind() == kind)
      return true;
  return false;
}

const GroupedGemm &LayerKernels::operator[](GemmKind kind) const {
  for (const GroupedGemm &gemm : gemms_)
    if (gemm.kind() == kind)
      return gemm;
  throw Error("layer '" + layerName_ + "' has no " + std::string(toString(kind)) +
              " GEMM; its spec lists the GEMMs it compiles");
}

// MoeLayer

const std::string &MoeLayer::layerName() const { return layer_->layer.layer().name; }

size_t MoeLayer::workspaceBytes(int64_t tokens, const ForwardOptions &options) const {
  internal::ForwardOptions internalOptions;
  internalOptions.tokenRounding = options.tokenRounding;
  internalOptions.keepH = options.keepH;
  if (tokens < 0)
    throw Error("MoeLayer::workspaceBytes: T = " + std::to_string(tokens) + " must be 0 or more");
  return layer_->layer.workspaceBytes(tokens, internalOptions);
}

void MoeLayer::forward(const ForwardArgs &args, void *stream) const {
  internal::ForwardArgs device;
  device.x = devicePointer(args.x);
  device.routerWeights = devicePointer(args.routerWeights);
  device.routerLogits = devicePointer(args.routerLogits);
  device.w1 = devicePointer(args.w1);
  device.w2 = devicePointer(args.w2);
  device.out = devicePointer(args.out);
  device.tokens = args.tokens;
  device.workspace = devicePointer(args.workspace);
  device.workspaceBytes = args.workspaceBytes;
  device.h = devicePointer(args.h);
  device.options.tokenRounding = args.options.tokenRounding;
  device.options.keepH = args.options.keepH;
  // The calling thread may never have touched CUDA; the forward's driver
  // calls need the device's context current.
  layer_->gpu.makeCurrent();
  const Stream borrowed = Stream::borrow(layer_->gpu.context(), static_cast<CUstream>(stream));
  layer_->layer.forward(borrowed, device);
}

// DeviceMemory

DeviceMemory::DeviceMemory() noexcept = default;
DeviceMemory::DeviceMemory(DeviceMemory &&) noexcept = default;
DeviceMemory &DeviceMemory::operator=(DeviceMemory &&) noexcept = default;
DeviceMemory::~DeviceMemory() = default;

void *DeviceMemory::data() const {
  return state_ ? reinterpret_cast<void *>(static_cast<uintptr_t>(state_->buffer.pointer()))
                : nullptr;
}
size_t DeviceMemory::bytes() const { return state_ ? state_->buffer.bytes() : 0; }

void DeviceMemory::upload(const void *host, size_t bytes) {
  if (!state_)
    throw Error("upload to an empty DeviceMemory");
  state_->gpu.makeCurrent();
  state_->buffer.upload(host, bytes);
}
void DeviceMemory::download(void *host, size_t bytes) const {
  if (!state_)
    throw Error("download from an empty DeviceMemory");
  state_->gpu.makeCurrent();
  state_->buffer.download(host, bytes);
}
void DeviceMemory::fill(uint8_t byte) {
  if (!state_)
    throw Error("fill of an empty DeviceMemory");
  state_->gpu.makeCurrent();
  state_->buffer.fillBytes(byte);
}

// CudaStream

CudaStream::CudaStream() noexcept = default;
CudaStream::CudaStream(CudaStream &&) noexcept = default;
CudaStream &CudaStream::operator=(CudaStream &&) noexcept = default;
CudaStream::~CudaStream() = default;

void *CudaStream::handle() const { return state_ ? state_->stream.handle() : nullptr; }
void CudaStream::synchronize() const {
  if (!state_)
    throw Error("synchronize of an empty CudaStream");
  state_->gpu.makeCurrent();
  state_->stream.synchronize();
}

// Runtime

Runtime::Runtime(RuntimeOptions options)
    : state_(std::make_unique<detail::RuntimeState>(options)) {}
Runtime::Runtime(Runtime &&) noexcept = default;
Runtime &Runtime::operator=(Runtime &&) noexcept = default;
Runtime::~Runtime() = default;

const Target &Runtime::target() const { return state_->target; }
bool Runtime::strict() const { return state_->knobs.strict; }
bool Runtime::hasCompiler() const { return state_->compiler != nullptr; }
std::string Runtime::cacheDirectory() const {
  return state_->cache->diskEnabled() ? state_->cache->directory() : std::string();
}

bool Runtime::hasGpu() const {
  try {
    state_->openGpu();
    return true;
  } catch (const Error &e) {
    if (e.kind() == ErrorKind::NoGpu)
      return false;
    throw;
  }
}

Spec Runtime::parseSpec(std::string_view text, std::string_view filename) const {
  return parseSpecText(text, state_->target, filename, &state_->tuningDb);
}
Spec Runtime::readSpec(const std::string &path) const {
  return parseSpecFile(path, state_->target, &state_->tuningDb);
}
void Runtime::resolve(Spec &spec) const {
  resolveSpecOrThrow(spec, state_->target, &state_->tuningDb);
}

LayerKernels Runtime::kernels(const LayerSpec &layer) { return state_->kernels(layer); }
MoeLayer Runtime::layer(const LayerSpec &layer, bool withRounding) {
  return state_->layer(layer, withRounding);
}

// The layer's module (kernels()) and, where it differs, the forward's
// up/down module and routing kernels (layer()): a strict runtime serves
// both afterwards without compiling.
bool Runtime::precompile(const LayerSpec &layer) {
  const std::vector<GemmProblem> problems = layerProblems(layer);
  const CacheKey key = moduleKey(problems, state_->target);
  bool compiled =
      compileThroughCache(*state_->cache, key, problems, state_->target, state_->compiler.get())
          .compiled;
  const std::vector<GemmProblem> forward = forwardProblems(layer);
  if (forward.empty())
    return compiled;
  const CacheKey forwardKey = moduleKey(forward, state_->target);
  if (!(forwardKey == key))
    compiled |= compileThroughCache(*state_->cache, forwardKey, forward, state_->target,
                                    state_->compiler.get())
                    .compiled;
  // The forward's routing kernels (plain top-K and token rounding), when
  // NVRTC is here; without it layer() finds them only in a cache that a
  // precompile with NVRTC filled.
  TemplateKernelCache *templates = &state_->templateCache();
  if (!templates->canCompile())
    return compiled;
  const size_t before = templates->nvrtcCompiles();
  const std::string arch = routingKernelArch(state_->target.computeCapability());
  for (bool rounding : {false, true})
    templates->compile(
        layerKernelProgram(internal::forwardRoutingConfig(layer, rounding), arch));
  return compiled || templates->nvrtcCompiles() > before;
}

DeviceMemory Runtime::allocate(size_t bytes) const { return state_->allocate(bytes); }
CudaStream Runtime::createStream() const { return state_->createStream(); }

RuntimeStats Runtime::stats() const {
  const KernelCacheStats cache = state_->cache->stats();
  RuntimeStats stats;
  stats.memoryHits = cache.memoryHits;
  stats.diskHits = cache.diskHits;
  stats.misses = cache.misses;
  stats.compiles = cache.compiles;
  stats.discarded = cache.discarded;
  stats.modulesLoaded = state_->modulesLoaded;
  stats.ptxLinks = state_->ptxLinks;
  return stats;
}

} // namespace moejit
