// Latencies of the embeddable runtime (moejit/moejit.h) on a cache:
//   cold    compile of a layer's module through the cache, per kernel
//   disk    a warm process: a new Runtime (empty memory level) reading the
//           module from the disk cache (and, with a GPU, loading its cubin,
//           or its PTX through the driver's JIT where the entry has none)
//   memory  an in-memory hit: KernelCache::lookup of a known key, and
//           Runtime::kernels() of a loaded layer (key hashing included)
//   launch  host time of GroupedGemm::launch on a cache hit (GPU only)
//   layer   Runtime::layer() in a first and a later process (GPU only)
//
//   moejit_runtime_latency [--arch=ARCH] [--launches=N] FILE.moe...
#include "moejit/moejit.h"

#include "runtime/api/layer_module.h"
#include "runtime/cache/kernel_cache.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

double microsecondsSince(Clock::time_point start) {
  return std::chrono::duration<double, std::micro>(Clock::now() - start).count();
}

double median(std::vector<double> values) {
  std::nth_element(values.begin(), values.begin() + values.size() / 2, values.end());
  return values[values.size() / 2];
}

// The median over `rounds` of the mean time of `batch` calls of `call`, in us.
template <class Call> double timePerCall(int rounds, int batch, Call &&call) {
  std::vector<double> means;
  for (int r = 0; r < rounds; ++r) {
    const auto start = Clock::now();
    for (int i = 0; i < batch; ++i)
      call();
    means.push_back(microsecondsSince(start) / batch);
  }
  return median(means);
}

struct ScratchCache {
  std::filesystem::path path;
  ScratchCache() {
    std::random_device random;
    path = std::filesystem::temp_directory_path() /
           ("moejit-bench-" + std::to_string(random()) + std::to_string(random()));
  }
  ~ScratchCache() {
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
  }
};

moejit::RuntimeOptions optionsFor(const ScratchCache &cache, const std::string &arch, bool strict) {
  moejit::RuntimeOptions options;
  options.cacheDir = cache.path.string();
  options.arch = arch;
  options.strict = strict;
  return options;
}

// Launch overhead: launches of up_proj on a small routed batch, timed on the
// host in batches short enough that the launch queue never fills.
void benchLaunch(moejit::Runtime &runtime, const moejit::LayerSpec &layer,
                 const moejit::LayerKernels &kernels, int launches) {
  if (!kernels.has(moejit::GemmKind::UpProj))
    return;
  const int E = layer.experts, d = layer.hidden;
  const int64_t u = layer.upColumns(), n = layer.intermediate;
  const int tokens = 64;
  const int64_t rows = int64_t(tokens) * layer.router.topK;
  std::vector<int32_t> offsets(E + 1), gather(rows);
  for (int e = 0; e <= E; ++e)
    offsets[e] = int32_t(rows * e / E);
  for (int64_t r = 0; r < rows; ++r)
    gather[r] = int32_t(r % tokens);
  moejit::DeviceMemory x = runtime.allocate(size_t(tokens) * d * 2),
                       w1 = runtime.allocate(size_t(E) * d * u * 2),
                       h = runtime.allocate(size_t(rows) * u * 2),
                       act = runtime.allocate(size_t(rows) * n * 2),
                       off = runtime.allocate(offsets.size() * 4),
                       gat = runtime.allocate(gather.size() * 4);
  x.fill(0);
  w1.fill(0);
  off.upload(offsets.data(), offsets.size() * 4);
  gat.upload(gather.data(), gather.size() * 4);
  moejit::CudaStream stream = runtime.createStream();
  moejit::GemmArgs args;
  args.a = x.data();
  args.b = w1.data();
  args.c = h.data();
  args.auxOut = act.data();
  args.offsets = static_cast<const int32_t *>(off.data());
  args.gather = static_cast<const int32_t *>(gat.data());
  args.totalRows = rows;
  const moejit::GroupedGemm &up = kernels[moejit::GemmKind::UpProj];
  for (int i = 0; i < 20; ++i)
    up.launch(args, stream.handle());
  stream.synchronize();
  constexpr int kBatch = 100;
  std::vector<double> perLaunch;
  for (int done = 0; done < launches; done += kBatch) {
    const auto start = Clock::now();
    for (int i = 0; i < kBatch; ++i)
      up.launch(args, stream.handle());
    perLaunch.push_back(microsecondsSince(start) / kBatch);
    stream.synchronize();
  }
  std::sort(perLaunch.begin(), perLaunch.end());
  std::printf("  launch   up_proj (%lld rows): %.2f us per launch (median of %zu batches of %d; "
              "min %.2f, max %.2f)\n",
              static_cast<long long>(rows), median(perLaunch), perLaunch.size(), kBatch,
              perLaunch.front(), perLaunch.back());
}

void benchLayer(const std::string &arch, const moejit::LayerSpec &layer, int launches) {
  const size_t kernelsPerModule = layer.gemms.size();
  std::printf("layer %s (%zu kernels)\n", layer.name.c_str(), kernelsPerModule);
  ScratchCache scratch;

  moejit::Runtime cold(optionsFor(scratch, arch, false));
  auto start = Clock::now();
  cold.precompile(layer);
  const double coldMs = microsecondsSince(start) / 1e3;
  std::printf("  cold     compile through the cache: %.1f ms, %.1f ms per kernel\n", coldMs,
              coldMs / kernelsPerModule);

  // A warm process: new Runtimes over the filled directory.
  std::vector<double> diskUs;
  for (int i = 0; i < 5; ++i) {
    moejit::Runtime warm(optionsFor(scratch, arch, true));
    start = Clock::now();
    warm.precompile(layer);
    diskUs.push_back(microsecondsSince(start));
  }
  std::printf("  disk     read+verify the module from disk: %.0f us (%.0f us per kernel)\n",
              median(diskUs), median(diskUs) / kernelsPerModule);

  moejit::KernelCacheOptions cacheOptions;
  cacheOptions.directory = scratch.path.string();
  moejit::KernelCache cache(cacheOptions);
  const moejit::CacheKey key =
      moejit::moduleKey(moejit::layerProblems(layer), moejit::Target::fromArch(arch));
  cache.lookup(key);
  const double lookupUs = timePerCall(11, 10000, [&] { (void)cache.lookup(key); });
  const double keyUs = timePerCall(11, 200, [&] {
    (void)moejit::moduleKey(moejit::layerProblems(layer), moejit::Target::fromArch(arch));
  });
  std::printf("  memory   KernelCache::lookup hit: %.3f us; key of a layer (problems + "
              "canonical JSON + XXH3): %.1f us\n",
              lookupUs, keyUs);

  moejit::Runtime gpuRuntime(optionsFor(scratch, arch, true));
  if (!gpuRuntime.hasGpu()) {
    std::printf("  (no GPU: module load, kernels() and launch not measured)\n");
    return;
  }
  std::vector<double> loadUs;
  uint64_t jitLoads = 0;
  for (int i = 0; i < 5; ++i) {
    moejit::Runtime warm(optionsFor(scratch, arch, true));
    start = Clock::now();
    moejit::LayerKernels loaded = warm.kernels(layer);
    loadUs.push_back(microsecondsSince(start));
    jitLoads += warm.stats().ptxLinks;
  }
  // Without a cubin in the entry (no ptxas, MOEJIT_PTXAS=off) every load
  // goes through the driver's PTX JIT; its compute cache serves the repeats
  // unless CUDA_CACHE_DISABLE=1.
  std::printf("  disk     kernels() in a warm process (disk + module load): %.0f us (%.0f us "
              "per kernel; first %.0f us; %llu of 5 loads JIT-compiled the PTX)\n",
              median(loadUs), median(loadUs) / kernelsPerModule, loadUs.front(),
              static_cast<unsigned long long>(jitLoads));
  // The layer forward: its two GEMMs and the NVRTC routing kernels, in a
  // first process over an empty cache and in a later one over the filled
  // directory (both kinds of kernels from disk).
  {
    ScratchCache forwardScratch;
    moejit::Runtime first(optionsFor(forwardScratch, arch, false));
    start = Clock::now();
    (void)first.layer(layer);
    const double coldLayerMs = microsecondsSince(start) / 1e3;
    moejit::Runtime later(optionsFor(forwardScratch, arch, true));
    start = Clock::now();
    (void)later.layer(layer);
    const double warmLayerMs = microsecondsSince(start) / 1e3;
    std::printf("  layer    Runtime::layer() (up/down GEMMs + routing kernels): first process "
                "%.1f ms, later process %.1f ms\n",
                coldLayerMs, warmLayerMs);
  }
  moejit::LayerKernels kernels = gpuRuntime.kernels(layer);
  const double hitUs = timePerCall(11, 200, [&] { (void)gpuRuntime.kernels(layer); });
  std::printf("  memory   Runtime::kernels() of a loaded layer: %.1f us\n", hitUs);
  benchLaunch(gpuRuntime, layer, kernels, launches);
}

} // namespace

int main(int argc, char **argv) {
  std::string arch;
  int launches = 5000;
  std::vector<std::string> files;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("--arch=", 0) == 0)
      arch = arg.substr(7);
    else if (arg.rfind("--launches=", 0) == 0)
      launches = std::stoi(arg.substr(11));
    else
      files.push_back(arg);
  }
  if (files.empty()) {
    std::fprintf(stderr, "usage: %s [--arch=ARCH] [--launches=N] FILE.moe...\n", argv[0]);
    return 2;
  }
  try {
    moejit::RuntimeOptions probe;
    probe.cacheDir = "";
    probe.arch = arch;
    const moejit::Runtime runtime(probe);
    std::printf("target %s (%d SMs)\n", runtime.target().arch.c_str(), runtime.target().smCount);
    for (const std::string &file : files)
      for (const moejit::LayerSpec &layer : runtime.readSpec(file).layers)
        benchLayer(runtime.target().arch, layer, launches);
  } catch (const moejit::Error &e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
