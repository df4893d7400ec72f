// A host application that embeds moejit: it describes an MoE layer in the DSL,
// routes a batch of tokens (softmax top-K), runs the layer's up_proj and
// down_proj grouped GEMMs on its own stream and checks them against a small
// CPU computation. It includes moejit/moejit.h only and needs no CUDA
// toolkit: device memory and the stream come from the runtime.
//
// Usage: moejit_host_app [TOKENS]. Without a GPU it fills the kernel cache
// (what a serving host would load) and exits 0.
#include <moejit/moejit.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

namespace {

constexpr const char *kLayer = R"(
layer host_demo {
  experts      = 16
  hidden       = 512
  intermediate = 256
  router { top_k = 4 }
  gemm up_proj {}
  gemm down_proj {}
}
)";

uint16_t toBf16(float value) { // round to nearest even
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  bits += 0x7FFF + ((bits >> 16) & 1);
  return static_cast<uint16_t>(bits >> 16);
}

float fromBf16(uint16_t half) {
  const uint32_t bits = static_cast<uint32_t>(half) << 16;
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

// Random bf16 values in [-scale, scale].
std::vector<uint16_t> randomBf16(size_t count, float scale, std::mt19937 &random) {
  std::uniform_real_distribution<float> uniform(-scale, scale);
  std::vector<uint16_t> values(count);
  for (uint16_t &v : values)
    v = toBf16(uniform(random));
  return values;
}

// Rows grouped by expert, as the kernels read them (docs/kernel-abi.md).
struct Routing {
  std::vector<int32_t> offsets; // E + 1
  std::vector<int32_t> gather;  // token of each grouped row
  std::vector<float> scale;     // its renormalised router weight
  int64_t rows() const { return offsets.back(); }
};

// Softmax over random router logits, top-K per token, weights renormalised.
Routing route(int tokens, int experts, int topK, std::mt19937 &random) {
  std::normal_distribution<float> logit(0.0f, 1.0f);
  std::vector<std::vector<std::pair<int32_t, float>>> byExpert(experts);
  std::vector<float> probs(experts);
  std::vector<int> order(experts);
  for (int t = 0; t < tokens; ++t) {
    for (float &p : probs)
      p = std::exp(logit(random));
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + topK, order.end(),
                      [&](int a, int b) { return probs[a] > probs[b]; });
    float chosen = 0;
    for (int k = 0; k < topK; ++k)
      chosen += probs[order[k]];
    for (int k = 0; k < topK; ++k)
      byExpert[order[k]].push_back({t, probs[order[k]] / chosen});
  }
  Routing routing;
  routing.offsets.push_back(0);
  for (const auto &rows : byExpert) {
    for (const auto &[token, weight] : rows) {
      routing.gather.push_back(token);
      routing.scale.push_back(weight);
    }
    routing.offsets.push_back(static_cast<int32_t>(routing.gather.size()));
  }
  return routing;
}

double silu(double x) { return x / (1.0 + std::exp(-x)); }

// Relative Frobenius error of `got` (bf16) against `want`.
double relativeError(const std::vector<uint16_t> &got, const std::vector<double> &want) {
  double diff = 0, norm = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double d = fromBf16(got[i]) - want[i];
    diff += d * d;
    norm += want[i] * want[i];
  }
  return std::sqrt(diff / std::max(norm, 1e-30));
}

template <class T>
moejit::DeviceMemory upload(const moejit::Runtime &runtime, const std::vector<T> &host) {
  moejit::DeviceMemory memory = runtime.allocate(host.size() * sizeof(T));
  memory.upload(host.data(), host.size() * sizeof(T));
  return memory;
}

template <class T> std::vector<T> download(const moejit::DeviceMemory &memory) {
  std::vector<T> host(memory.bytes() / sizeof(T));
  memory.download(host.data(), memory.bytes());
  return host;
}

int run(int tokens) {
  moejit::Runtime runtime; // cache dir, strict mode and target from the environment
  const moejit::Spec spec = runtime.parseSpec(kLayer, "host_demo.moe");
  const moejit::LayerSpec &layer = spec.layers[0];
  if (!runtime.hasGpu()) {
    const bool compiled = runtime.precompile(layer);
    std::printf("no GPU: %s the %s kernels for %s into the kernel cache; nothing to run\n",
                compiled ? "compiled" : "found", layer.name.c_str(), runtime.target().arch.c_str());
    return 0;
  }
  const moejit::LayerKernels kernels = runtime.kernels(layer);
  const int E = layer.experts, d = layer.hidden, n = layer.intermediate;
  const int u = 2 * n; // swiglu: W1 holds the gate and up halves

  std::mt19937 random(2024);
  const Routing routing = route(tokens, E, layer.router.topK, random);
  const int64_t R = routing.rows();
  const std::vector<uint16_t> x = randomBf16(size_t(tokens) * d, 1.0f, random);
  const std::vector<uint16_t> w1 =
      randomBf16(size_t(E) * d * u, 1.0f / std::sqrt(float(d)), random);
  const std::vector<uint16_t> w2 =
      randomBf16(size_t(E) * n * d, 1.0f / std::sqrt(float(n)), random);

  moejit::DeviceMemory xDev = upload(runtime, x), w1Dev = upload(runtime, w1),
                       w2Dev = upload(runtime, w2);
  moejit::DeviceMemory offsets = upload(runtime, routing.offsets),
                       gather = upload(runtime, routing.gather),
                       scale = upload(runtime, routing.scale);
  moejit::DeviceMemory h = runtime.allocate(R * u * 2), act = runtime.allocate(R * n * 2),
                       y = runtime.allocate(R * d * 2);
  moejit::CudaStream stream = runtime.createStream();

  moejit::GemmArgs up;
  up.a = xDev.data();
  up.b = w1Dev.data();
  up.c = h.data();
  up.auxOut = act.data();
  up.offsets = static_cast<const int32_t *>(offsets.data());
  up.gather = static_cast<const int32_t *>(gather.data());
  up.totalRows = R;
  kernels[moejit::GemmKind::UpProj].launch(up, stream.handle());

  moejit::GemmArgs down;
  down.a = act.data();
  down.b = w2Dev.data();
  down.c = y.data();
  down.offsets = up.offsets;
  down.scale = static_cast<const float *>(scale.data());
  down.totalRows = R;
  kernels[moejit::GemmKind::DownProj].launch(down, stream.handle());
  stream.synchronize();

  const std::vector<uint16_t> hGot = download<uint16_t>(h), actGot = download<uint16_t>(act),
                              yGot = download<uint16_t>(y);

  // CPU: H = gather(X) W1[e]; act = silu(gate) * up; Y = scale * act W2[e].
  std::vector<double> hWant(R * u), actWant(R * n), yWant(R * d);
  for (int e = 0; e < E; ++e) {
    for (int64_t r = routing.offsets[e]; r < routing.offsets[e + 1]; ++r) {
      const uint16_t *xRow = &x[size_t(routing.gather[r]) * d];
      for (int j = 0; j < u; ++j) {
        double sum = 0;
        for (int k = 0; k < d; ++k)
          sum += double(fromBf16(xRow[k])) * fromBf16(w1[(size_t(e) * d + k) * u + j]);
        hWant[r * u + j] = sum;
      }
      for (int j = 0; j < n; ++j)
        actWant[r * n + j] = silu(hWant[r * u + j]) * hWant[r * u + n + j];
      for (int c = 0; c < d; ++c) {
        double sum = 0;
        for (int j = 0; j < n; ++j)
          sum += double(fromBf16(toBf16(float(actWant[r * n + j])))) *
                 fromBf16(w2[(size_t(e) * n + j) * d + c]);
        yWant[r * d + c] = routing.scale[r] * sum;
      }
    }
  }
  const double errH = relativeError(hGot, hWant), errAct = relativeError(actGot, actWant),
               errY = relativeError(yGot, yWant);
  const bool ok = errH < 1e-2 && errAct < 1e-2 && errY < 1e-2;
  std::printf("%s: T=%d rows=%lld on %s: up_proj H err %.2e act err %.2e, down_proj Y err "
              "%.2e: %s\n",
              layer.name.c_str(), tokens, static_cast<long long>(R), runtime.target().arch.c_str(),
              errH, errAct, errY, ok ? "PASS" : "FAIL");
  const moejit::RuntimeStats stats = runtime.stats();
  std::printf("kernel cache: %llu compiled, %llu from disk, %llu PTX links\n",
              static_cast<unsigned long long>(stats.compiles),
              static_cast<unsigned long long>(stats.diskHits),
              static_cast<unsigned long long>(stats.ptxLinks));
  return ok ? 0 : 1;
}

} // namespace

int main(int argc, char **argv) {
  const int tokens = argc > 1 ? std::atoi(argv[1]) : 300;
  try {
    return run(tokens);
  } catch (const moejit::Error &e) {
    std::fprintf(stderr, "moejit_host_app: %s\n", e.what());
    return 1;
  }
}
