// The layer kernels on the GPU against their CPU references, at T in {1, 7,
// 4096, 32768}, E in {8, 128, 256}, K in {2, 8}, uniform and skewed logits:
// top-K ids exactly (scores to float tolerance), the grouped rows and the
// inverse map exactly (against groupByExpert / the rounding reference fed
// the GPU's own scores), aggregation within bf16 tolerance, and the router
// logits X Wr against float64.
#include "moejit/error.h"
#include "moejit/knobs.h"
#include "runtime/layer/layer_kernels.h"
#include "runtime/layer/layer_reference.h"
#include "runtime/src/half.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdlib>
#include <map>
#include <memory>
#include <numeric>
#include <optional>
#include <random>
#include <tuple>

namespace moejit {
namespace {

// One GPU and one kernel cache for the whole binary (compiles are slow).
class GpuSession {
public:
  static GpuSession &get() {
    static GpuSession session;
    return session;
  }
  Gpu *gpu() { return gpu_ ? &*gpu_ : nullptr; }
  const std::string &whyNoGpu() const { return whyNoGpu_; }

  const RoutingKernels &kernels(const RoutingKernelsConfig &config) {
    const auto key = std::make_tuple(config.experts, config.topK, static_cast<int>(config.rounding),
                                     config.roundingTile);
    auto it = kernels_.find(key);
    if (it == kernels_.end())
      it = kernels_.emplace(key, std::make_unique<RoutingKernels>(*gpu_, *cache_, config)).first;
    return *it->second;
  }

  template <class T> std::vector<T> download(CUdeviceptr pointer, int64_t count) {
    std::vector<T> host(count);
    if (count > 0)
      gpu_->driver().call(gpu_->driver().cuMemcpyDtoH, host.data(), pointer, count * sizeof(T));
    return host;
  }
  template <class T> DeviceBuffer upload(const std::vector<T> &host) {
    DeviceBuffer buffer = gpu_->allocate(std::max<size_t>(host.size() * sizeof(T), 16));
    if (!host.empty())
      gpu_->driver().call(gpu_->driver().cuMemcpyHtoD, buffer.pointer(), host.data(),
                          host.size() * sizeof(T));
    return buffer;
  }

private:
  GpuSession() {
    try {
      gpu_.emplace();
      cache_ = std::make_unique<TemplateKernelCache>(
          Nvrtc::load(nvrtcLibraryCandidates(Knobs::fromEnvironment())));
    } catch (const Error &e) {
      if (e.kind() != ErrorKind::NoGpu)
        throw;
      whyNoGpu_ = e.what();
      gpu_.reset();
    }
  }
  std::optional<Gpu> gpu_;
  std::string whyNoGpu_;
  std::unique_ptr<TemplateKernelCache> cache_;
  std::map<std::tuple<int, int, int, int>, std::unique_ptr<RoutingKernels>> kernels_;
};

struct Case {
  int64_t tokens;
  int experts;
  int topK;
  bool skewed;
};

std::string caseName(const testing::TestParamInfo<Case> &info) {
  const Case &c = info.param;
  return "T" + std::to_string(c.tokens) + "_E" + std::to_string(c.experts) + "_K" +
         std::to_string(c.topK) + (c.skewed ? "_skewed" : "_uniform");
}

std::vector<Case> cases() {
  std::vector<Case> all;
  for (int64_t tokens : {1, 7, 4096, 32768})
    for (int experts : {8, 128, 256})
      for (int topK : {2, 8})
        for (bool skewed : {false, true})
          all.push_back({tokens, experts, topK, skewed});
  return all;
}

// Normal logits; skewed ones add a Zipf-like bias over a random expert
// ranking so a few experts take most tokens and many get none.
std::vector<float> makeLogits(const Case &c, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<float> bias(c.experts, 0.f);
  if (c.skewed) {
    std::vector<int> rank(c.experts);
    std::iota(rank.begin(), rank.end(), 0);
    std::shuffle(rank.begin(), rank.end(), rng);
    for (int e = 0; e < c.experts; ++e)
      bias[e] = -3.f * std::log(1.f + rank[e]);
  }
  std::vector<float> logits(c.tokens * c.experts);
  for (int64_t i = 0; i < static_cast<int64_t>(logits.size()); ++i)
    logits[i] = normal(rng) + bias[i % c.experts];
  return logits;
}

// Reports the first differing element rather than printing whole vectors.
template <class T>
void expectSame(const std::vector<T> &actual, const std::vector<T> &expected, const char *what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  for (size_t i = 0; i < actual.size(); ++i)
    if (!(actual[i] == expected[i])) {
      ADD_FAILURE() << what << " differs first at " << i << ": " << actual[i] << " instead of "
                    << expected[i];
      return;
    }
}

class LayerKernelsGpu : public testing::TestWithParam<Case> {
protected:
  void SetUp() override {
    if (!GpuSession::get().gpu())
      GTEST_SKIP() << "no GPU: " << GpuSession::get().whyNoGpu();
  }
};

// Checks one routing (rounded or not) end to end against the references.
void checkRouting(const Case &c, RoundingMode mode, const DeviceBuffer &logits,
                  const std::vector<float> &hostLogits) {
  SCOPED_TRACE(std::string("rounding ") + std::string(toString(mode)));
  GpuSession &session = GpuSession::get();
  RoutingKernelsConfig config;
  config.experts = c.experts;
  config.topK = c.topK;
  config.rounding = mode;
  config.roundingTile = mode == RoundingMode::None ? 0 : 128;
  const RoutingKernels &kernels = session.kernels(config);
  const size_t bytes = kernels.workspaceBytes(c.tokens);
  DeviceBuffer workspace = session.gpu()->allocate(bytes);
  workspace.fillBytes(0xff); // poison: every output must be written
  Stream stream = session.gpu()->createStream();
  RouterInput input;
  input.logits = logits.pointer();
  const RoutingBuffers b = kernels.route(stream, input, c.tokens, workspace.pointer(), bytes);
  stream.synchronize();

  const int64_t slots = c.tokens * c.topK;
  TokenChoices gpuChoices;
  gpuChoices.tokens = c.tokens;
  gpuChoices.experts = c.experts;
  gpuChoices.topK = c.topK;
  gpuChoices.expert = session.download<int32_t>(b.topkIds, slots);
  gpuChoices.score = session.download<float>(b.topkScores, slots);
  const TokenChoices expected =
      referenceTopK(hostLogits, c.tokens, c.experts, c.topK, ScoreFunc::Softmax, true);
  expectSame(gpuChoices.expert, expected.expert, "top-K ids");
  if (testing::Test::HasFailure())
    return;
  for (int64_t i = 0; i < slots; ++i)
    ASSERT_NEAR(gpuChoices.score[i], expected.score[i], 2e-6 + 2e-5 * expected.score[i]) << i;

  GroupedRows expectedRows;
  if (mode == RoundingMode::None) {
    expectedRows = groupByExpert(gpuChoices);
  } else {
    // The GPU's raw scores, [E][T] with the sign bit marking chosen tokens.
    const std::vector<float> byExpert =
        session.download<float>(b.scoresByExpert, c.tokens * c.experts);
    const std::vector<double> rawExpected =
        referenceRouterScores(hostLogits, c.tokens, c.experts, ScoreFunc::Softmax);
    std::vector<float> raw(c.tokens * c.experts);
    std::vector<char> chosen(c.tokens * c.experts, 0);
    for (int64_t slot = 0; slot < slots; ++slot)
      chosen[slot / c.topK * c.experts + gpuChoices.expert[slot]] = 1;
    for (int e = 0; e < c.experts; ++e)
      for (int64_t t = 0; t < c.tokens; ++t) {
        const float value = byExpert[e * c.tokens + t];
        ASSERT_EQ(std::signbit(value), chosen[t * c.experts + e] != 0) << "e " << e << " t " << t;
        raw[t * c.experts + e] = std::fabs(value);
        ASSERT_NEAR(raw[t * c.experts + e], rawExpected[t * c.experts + e],
                    2e-6 + 2e-5 * rawExpected[t * c.experts + e]);
      }
    expectedRows = referenceTokenRounding(gpuChoices, raw, mode, config.roundingTile);
  }
  const int64_t rows = expectedRows.rows();
  ASSERT_LE(rows, b.maxRows);
  expectSame(session.download<int32_t>(b.counts, c.experts), expectedRows.counts, "counts");
  expectSame(kernels.downloadCounts(stream, b), expectedRows.counts, "downloadCounts");
  expectSame(session.download<int32_t>(b.offsets, c.experts + 1), expectedRows.offsets, "offsets");
  expectSame(session.download<int32_t>(b.gather, rows), expectedRows.gather, "gather");
  expectSame(session.download<float>(b.scale, rows), expectedRows.scale, "scale");
  const TokenRowMap expectedMap = tokenRowMap(expectedRows);
  expectSame(session.download<int32_t>(b.tokenOffsets, c.tokens + 1), expectedMap.offsets,
             "tokenOffsets");
  expectSame(session.download<int32_t>(b.tokenRows, rows), expectedMap.rows, "tokenRows");

  // Aggregation of random Y rows, with and without the score.
  const int hidden = c.tokens > 4096 ? 64 : 264;
  std::mt19937_64 rng(c.tokens * 31 + c.experts);
  std::uniform_real_distribution<float> uniform(-1.f, 1.f);
  std::vector<uint16_t> y(std::max<int64_t>(rows, 1) * hidden);
  for (uint16_t &value : y)
    value = floatToBf16(uniform(rng));
  DeviceBuffer yDevice = session.upload(y);
  DeviceBuffer out = session.gpu()->allocate(std::max<int64_t>(c.tokens, 1) * hidden * 2);
  for (bool applyScale : {false, true}) {
    SCOPED_TRACE(applyScale ? "scaled" : "unscaled");
    out.fillBytes(0xff);
    kernels.aggregate(stream, b, yDevice.pointer(), out.pointer(), hidden, applyScale);
    stream.synchronize();
    const std::vector<uint16_t> actual =
        session.download<uint16_t>(out.pointer(), c.tokens * hidden);
    const std::vector<double> reference =
        referenceAggregation(y, DType::BF16, hidden, expectedRows, applyScale);
    double errorSquared = 0, normSquared = 0;
    for (size_t i = 0; i < actual.size(); ++i) {
      const double value = bf16ToFloat(actual[i]);
      ASSERT_TRUE(std::isfinite(value)) << "element " << i;
      errorSquared += (value - reference[i]) * (value - reference[i]);
      normSquared += reference[i] * reference[i];
    }
    EXPECT_LE(std::sqrt(errorSquared), 8e-3 * std::sqrt(normSquared) + 1e-30);
  }
}

TEST_P(LayerKernelsGpu, RoutingPermutationRoundingAggregation) {
  const Case &c = GetParam();
  const std::vector<float> logits = makeLogits(c, 7 + c.tokens + c.experts * 3 + c.topK);
  DeviceBuffer logitsDevice = GpuSession::get().upload(logits);
  checkRouting(c, RoundingMode::None, logitsDevice, logits);
  checkRouting(c, RoundingMode::Nearest, logitsDevice, logits);
  if (c.tokens <= 4096) {
    checkRouting(c, RoundingMode::Up, logitsDevice, logits);
    checkRouting(c, RoundingMode::Down, logitsDevice, logits);
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, LayerKernelsGpu, testing::ValuesIn(cases()), caseName);

TEST(LayerKernelsGpuRouter, LogitsFromXAndRouterWeights) {
  GpuSession &session = GpuSession::get();
  if (!session.gpu())
    GTEST_SKIP() << "no GPU: " << session.whyNoGpu();
  for (int64_t tokens : {1, 7, 4096}) {
    const int hidden = 200, experts = 128;
    SCOPED_TRACE("T " + std::to_string(tokens));
    std::mt19937_64 rng(tokens);
    std::uniform_real_distribution<float> uniform(-1.f, 1.f);
    std::vector<uint16_t> x(tokens * hidden), wr(hidden * experts);
    for (uint16_t &value : x)
      value = floatToBf16(uniform(rng));
    for (uint16_t &value : wr)
      value = floatToBf16(uniform(rng) * 0.1f);
    DeviceBuffer xDevice = session.upload(x), wrDevice = session.upload(wr);
    RoutingKernelsConfig config;
    config.experts = experts;
    config.topK = 8;
    const RoutingKernels &kernels = session.kernels(config);
    const size_t bytes = kernels.workspaceBytes(tokens);
    DeviceBuffer workspace = session.gpu()->allocate(bytes);
    Stream stream = session.gpu()->createStream();
    RouterInput input;
    input.x = xDevice.pointer();
    input.weights = wrDevice.pointer();
    input.hidden = hidden;
    const RoutingBuffers b = kernels.route(stream, input, tokens, workspace.pointer(), bytes);
    stream.synchronize();
    const std::vector<float> logits = session.download<float>(b.logits, tokens * experts);
    const std::vector<double> expected =
        referenceRouterLogits(x, wr, DType::BF16, tokens, hidden, experts);
    for (size_t i = 0; i < logits.size(); ++i)
      ASSERT_NEAR(logits[i], expected[i], 1e-4) << i;
    // The top-K of the GPU logits matches the reference on those logits.
    expectSame(session.download<int32_t>(b.topkIds, tokens * 8),
               referenceTopK(logits, tokens, experts, 8, ScoreFunc::Softmax, true).expert,
               "top-K ids");
  }
}

} // namespace
} // namespace moejit
