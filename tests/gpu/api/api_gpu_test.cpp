// GPU tier of the public API (libmoejit.so): a second process serves the
// layer from the disk cache without compiling or linking; launches from
// several threads on several streams give the single-stream result, which
// matches a CPU computation.
#include <moejit/moejit.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <random>
#include <spawn.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

extern char **environ;

namespace moejit {
namespace {

constexpr const char *kLayer = "layer gpu_api {\n"
                               "  experts = 8\n"
                               "  hidden = 256\n"
                               "  intermediate = 128\n"
                               "  router { top_k = 2 }\n"
                               "  gemm up_proj {}\n"
                               "  gemm down_proj {}\n"
                               "}\n";
constexpr const char *kChildCacheVariable = "MOEJIT_GPU_API_TEST_CHILD_CACHE";

float fromBf16(uint16_t half) {
  const uint32_t bits = static_cast<uint32_t>(half) << 16;
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

RuntimeOptions optionsFor(const std::string &cacheDir, bool strict) {
  RuntimeOptions options;
  options.cacheDir = cacheDir;
  options.strict = strict;
  return options;
}

// up_proj inputs on the device, a fixed routing and the CPU's H.
struct UpProjCase {
  int64_t rows = 0;
  int64_t hElements = 0, actElements = 0;
  DeviceMemory x, w1, offsets, gather;
  std::vector<double> hWant;

  UpProjCase(const Runtime &runtime, const LayerSpec &layer, int tokens) {
    const int E = layer.experts, d = layer.hidden, K = layer.router.topK;
    const int64_t u = layer.upColumns();
    rows = int64_t(tokens) * K;
    hElements = rows * u;
    actElements = rows * layer.intermediate;
    std::mt19937 random(7);
    std::uniform_int_distribution<int> small(-4, 4);
    // bf16 of small integers / 8: exact, so the CPU sum is exact too.
    auto values = [&](size_t count) {
      std::vector<uint16_t> v(count);
      for (uint16_t &x : v) {
        const float f = small(random) / 8.0f;
        uint32_t bits;
        std::memcpy(&bits, &f, sizeof bits);
        x = static_cast<uint16_t>(bits >> 16);
      }
      return v;
    };
    const std::vector<uint16_t> xHost = values(size_t(tokens) * d);
    const std::vector<uint16_t> w1Host = values(size_t(E) * d * u);
    std::vector<int32_t> offsetsHost(E + 1), gatherHost(rows);
    for (int e = 0; e <= E; ++e)
      offsetsHost[e] = int32_t(rows * e / E);
    for (int64_t r = 0; r < rows; ++r)
      gatherHost[r] = int32_t((r * 7) % tokens);
    hWant.assign(hElements, 0.0);
    for (int e = 0; e < E; ++e)
      for (int64_t r = offsetsHost[e]; r < offsetsHost[e + 1]; ++r)
        for (int64_t j = 0; j < u; ++j) {
          double sum = 0;
          for (int k = 0; k < d; ++k)
            sum += double(fromBf16(xHost[size_t(gatherHost[r]) * d + k])) *
                   fromBf16(w1Host[(size_t(e) * d + k) * u + j]);
          hWant[r * u + j] = sum;
        }
    x = upload(runtime, xHost);
    w1 = upload(runtime, w1Host);
    offsets = upload(runtime, offsetsHost);
    gather = upload(runtime, gatherHost);
  }

  template <class T>
  static DeviceMemory upload(const Runtime &runtime, const std::vector<T> &host) {
    DeviceMemory memory = runtime.allocate(host.size() * sizeof(T));
    memory.upload(host.data(), host.size() * sizeof(T));
    return memory;
  }

  GemmArgs args(const DeviceMemory &h, const DeviceMemory &act) const {
    GemmArgs a;
    a.a = x.data();
    a.b = w1.data();
    a.c = h.data();
    a.auxOut = act.data();
    a.offsets = static_cast<const int32_t *>(offsets.data());
    a.gather = static_cast<const int32_t *>(gather.data());
    a.totalRows = rows;
    return a;
  }
};

std::vector<uint16_t> download(const DeviceMemory &memory) {
  std::vector<uint16_t> host(memory.bytes() / 2);
  memory.download(host.data(), memory.bytes());
  return host;
}

double relativeError(const std::vector<uint16_t> &got, const std::vector<double> &want) {
  double diff = 0, norm = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double d = fromBf16(got[i]) - want[i];
    diff += d * d;
    norm += want[i] * want[i];
  }
  return std::sqrt(diff / std::max(norm, 1e-30));
}

class ApiGpu : public ::testing::Test {
protected:
  void SetUp() override {
    scratch_ =
        std::filesystem::temp_directory_path() / ("moejit-gpu-api-" + std::to_string(::getpid()));
    runtime_.emplace(optionsFor((scratch_ / "cache").string(), false));
    if (!runtime_->hasGpu())
      GTEST_SKIP() << "no GPU: the GPU tier of the API needs one";
  }
  void TearDown() override {
    runtime_.reset();
    std::error_code ignored;
    std::filesystem::remove_all(scratch_, ignored);
  }
  std::filesystem::path scratch_;
  std::optional<Runtime> runtime_;
};

// Re-runs this binary's WarmChild test in a new process on `cacheDir`.
int runChild(const std::string &cacheDir) {
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  std::string filter = "--gtest_filter=ApiGpuChild.WarmStart";
  std::string variable = std::string(kChildCacheVariable) + "=" + cacheDir;
  std::vector<char *> env;
  for (char **e = environ; *e; ++e)
    env.push_back(*e);
  env.push_back(variable.data());
  env.push_back(nullptr);
  char *argv[] = {const_cast<char *>(self.c_str()), filter.data(), nullptr};
  pid_t pid = 0;
  if (posix_spawn(&pid, self.c_str(), nullptr, nullptr, argv, env.data()) != 0)
    return -1;
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST_F(ApiGpu, SecondProcessStartsWarmFromDisk) {
  const Spec spec = runtime_->parseSpec(kLayer);
  runtime_->kernels(spec.layers[0]);
  const RuntimeStats first = runtime_->stats();
  EXPECT_EQ(first.compiles, 1u);
  // ptxas assembled the cubin at compile time (the GPU hosts have the
  // toolkit), so the load is no driver JIT.
  EXPECT_EQ(first.ptxLinks, 0u);
  EXPECT_EQ(runChild((scratch_ / "cache").string()), 0);
}

// Run by SecondProcessStartsWarmFromDisk in a new process; skipped otherwise.
TEST(ApiGpuChild, WarmStart) {
  const char *cacheDir = std::getenv(kChildCacheVariable);
  if (!cacheDir)
    GTEST_SKIP() << "run by ApiGpu.SecondProcessStartsWarmFromDisk";
  Runtime runtime(optionsFor(cacheDir, true)); // strict: a miss would throw
  const Spec spec = runtime.parseSpec(kLayer);
  const LayerKernels kernels = runtime.kernels(spec.layers[0]);
  const RuntimeStats stats = runtime.stats();
  EXPECT_EQ(stats.compiles, 0u);
  EXPECT_EQ(stats.diskHits, 1u);
  // The cubin came from the cache with the PTX: no driver JIT either.
  EXPECT_EQ(stats.ptxLinks, 0u);
  UpProjCase up(runtime, spec.layers[0], 100);
  DeviceMemory h = runtime.allocate(up.hElements * 2), act = runtime.allocate(up.actElements * 2);
  CudaStream stream = runtime.createStream();
  kernels[GemmKind::UpProj].launch(up.args(h, act), stream.handle());
  stream.synchronize();
  EXPECT_LT(relativeError(download(h), up.hWant), 1e-2);
}

TEST_F(ApiGpu, ConcurrentLaunchesOnSeveralStreams) {
  const Spec spec = runtime_->parseSpec(kLayer);
  const LayerSpec &layer = spec.layers[0];
  UpProjCase up(*runtime_, layer, 200);

  constexpr int kThreads = 6, kLaunches = 20;
  std::vector<LayerKernels> perThread(kThreads);
  std::vector<std::thread> threads;
  // kernels() from every thread at once: one compile, one load.
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] { perThread[t] = runtime_->kernels(layer); });
  for (std::thread &thread : threads)
    thread.join();
  threads.clear();
  EXPECT_EQ(runtime_->stats().compiles, 1u);
  EXPECT_EQ(runtime_->stats().modulesLoaded, 1u);

  std::vector<DeviceMemory> hs, acts;
  for (int t = 0; t < kThreads; ++t) {
    hs.push_back(runtime_->allocate(up.hElements * 2));
    acts.push_back(runtime_->allocate(up.actElements * 2));
    hs.back().fill(0xFF);
  }
  std::vector<std::string> errors(kThreads);
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      try {
        CudaStream stream = runtime_->createStream();
        for (int i = 0; i < kLaunches; ++i)
          perThread[t][GemmKind::UpProj].launch(up.args(hs[t], acts[t]), stream.handle());
        stream.synchronize();
      } catch (const Error &e) {
        errors[t] = e.what();
      }
    });
  for (std::thread &thread : threads)
    thread.join();
  const std::vector<uint16_t> first = download(hs[0]);
  EXPECT_LT(relativeError(first, up.hWant), 1e-2);
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(errors[t], "") << "thread " << t;
    EXPECT_EQ(download(hs[t]), first) << "thread " << t;
  }
}

} // namespace
} // namespace moejit
