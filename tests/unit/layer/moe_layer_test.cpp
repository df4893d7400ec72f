// CPU tier of MoeLayer: the forward's workspace layout, its routing config,
// input validation (no GPU needed), the whole-layer float64 reference against
// a naive restatement on a tiny layer, token sampling, and the forward job
// on a machine without a GPU.
#include "moejit/dsl.h"
#include "moejit/error.h"
#include "runtime/layer/forward_job.h"
#include "runtime/layer/layer_forward_reference.h"
#include "runtime/layer/moe_layer.h"
#include "runtime/src/half.h"
#include "runtime/src/run.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <set>
#include <sstream>

namespace moejit {
namespace {

using namespace internal; // MoeLayer and its ForwardArgs

LayerSpec parseLayer(const std::string &text) {
  Diagnostics diags(text);
  std::optional<Spec> spec = parseSpec(text, "test.moe", Target{}, diags);
  if (!spec)
    throw std::runtime_error(diags.render());
  return spec->layers.front();
}

LayerSpec qwen3() {
  return parseLayer("layer q { experts = 128; hidden = 2048; intermediate = 768\n"
                    "router { top_k = 8 }\n gemm up_proj { tile = 128x128x64 }\n"
                    "gemm down_proj {} }\n");
}

void expectErrorContaining(const std::function<void()> &call, const std::string &text) {
  try {
    call();
    ADD_FAILURE() << "no error; expected one containing '" << text << "'";
  } catch (const Error &e) {
    EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
  }
}

TEST(ForwardRoutingConfig, PlainTopKUnlessAsked) {
  const LayerSpec layer = qwen3();
  EXPECT_EQ(forwardRoutingConfig(layer, false).rounding, RoundingMode::None);
  const RoutingKernelsConfig rounded = forwardRoutingConfig(layer, true);
  EXPECT_EQ(rounded.rounding, RoundingMode::Nearest); // the spec says none
  EXPECT_EQ(rounded.roundingTile, 128);               // the up-projection's M tile
  const LayerSpec up = parseLayer("layer s { experts = 16; hidden = 256; intermediate = 128\n"
                                  "router { top_k = 2 }\n rounding { mode = up; tile = 256 } }\n");
  EXPECT_EQ(forwardRoutingConfig(up, false).rounding, RoundingMode::None);
  EXPECT_EQ(forwardRoutingConfig(up, true).rounding, RoundingMode::Up);
  EXPECT_EQ(forwardRoutingConfig(up, true).roundingTile, 256);
}

TEST(ForwardWorkspace, LayoutAfterTheRoutingBuffers) {
  const LayerSpec layer = qwen3();
  const RoutingKernelsConfig plain = forwardRoutingConfig(layer, false);
  const int64_t T = 4096, R = T * 8;
  // Without keepH the up-projection writes act(H) only: no room for H.
  const ForwardWorkspaceLayout l = forwardWorkspaceLayout(layer, plain, T, false, false);
  EXPECT_EQ(l.maxRows, R);
  EXPECT_FALSE(l.hInWorkspace);
  EXPECT_EQ(l.act, l.routing.bytes);
  EXPECT_EQ(l.act % 256, 0u);
  EXPECT_EQ(l.y, l.act + size_t(R) * 768 * 2);
  EXPECT_EQ(l.bytes, l.y + size_t(R) * 2048 * 2);

  const ForwardWorkspaceLayout kept = forwardWorkspaceLayout(layer, plain, T, true, false);
  EXPECT_TRUE(kept.hInWorkspace);
  EXPECT_EQ(kept.h, kept.routing.bytes);
  EXPECT_EQ(kept.act, kept.h + size_t(R) * 1536 * 2);
  EXPECT_EQ(kept.y, kept.act + size_t(R) * 768 * 2);
  EXPECT_EQ(kept.bytes, kept.y + size_t(R) * 2048 * 2);
  EXPECT_EQ(kept.bytes - l.bytes, size_t(R) * 1536 * 2);

  const ForwardWorkspaceLayout caller = forwardWorkspaceLayout(layer, plain, T, true, true);
  EXPECT_FALSE(caller.hInWorkspace);
  EXPECT_EQ(caller.act, caller.routing.bytes);
  EXPECT_LT(caller.bytes, kept.bytes);

  // Rounding launches the GEMMs for the most rows rounding can make.
  const RoutingKernelsConfig rounded = forwardRoutingConfig(layer, true);
  const ForwardWorkspaceLayout r = forwardWorkspaceLayout(layer, rounded, T, false, false);
  EXPECT_EQ(r.maxRows, maxGroupedRows(rounded, T));
  EXPECT_EQ(r.maxRows, R + 128 * 127);
  EXPECT_GT(r.bytes, l.bytes);

  EXPECT_EQ(forwardWorkspaceLayout(layer, plain, 0, false, false).maxRows, 0);
}

TEST(ForwardWorkspace, ActivationNoneReadsHAsAct) {
  const LayerSpec layer = parseLayer("layer r { experts = 8; hidden = 256; intermediate = 512\n"
                                     "activation = relu\n router { top_k = 2 } }\n");
  const LayerSpec none = parseLayer("layer n { experts = 8; hidden = 256; intermediate = 512\n"
                                    "activation = none\n router { top_k = 2 } }\n");
  const ForwardWorkspaceLayout l =
      forwardWorkspaceLayout(none, forwardRoutingConfig(none, false), 64, false, false);
  EXPECT_EQ(l.act, l.h);
  EXPECT_NE(l.y, l.h); // act = H is read while Y is written
  const ForwardWorkspaceLayout relu =
      forwardWorkspaceLayout(layer, forwardRoutingConfig(layer, false), 64, false, false);
  EXPECT_NE(relu.act, relu.h);
}

class ForwardValidation : public testing::Test {
protected:
  void SetUp() override {
    layer = qwen3();
    config = forwardRoutingConfig(layer, false);
    args.x = 0x10000;
    args.routerWeights = 0x20000;
    args.w1 = 0x30000;
    args.w2 = 0x40000;
    args.out = 0x50000;
    args.tokens = 100;
    args.workspace = 0x100000;
    args.workspaceBytes = forwardWorkspaceLayout(layer, config, 100, false, false).bytes;
  }
  void expectError(const std::string &text) {
    expectErrorContaining([&] { validateForwardArgs(layer, config, args); }, text);
  }
  LayerSpec layer;
  RoutingKernelsConfig config;
  ForwardArgs args;
};

TEST_F(ForwardValidation, AcceptsGoodArgs) {
  EXPECT_NO_THROW(validateForwardArgs(layer, config, args));
  args.routerWeights = 0;
  args.routerLogits = 0x60000;
  EXPECT_NO_THROW(validateForwardArgs(layer, config, args));
  ForwardArgs empty;
  EXPECT_NO_THROW(validateForwardArgs(layer, config, empty)); // T = 0: nothing to do
}

TEST_F(ForwardValidation, NullPointers) {
  args.x = 0;
  expectError("X is null");
  SetUp();
  args.out = 0;
  expectError("O is null");
  SetUp();
  args.workspace = 0;
  expectError("workspace is null");
}

TEST_F(ForwardValidation, MisalignedPointers) {
  args.w1 += 8;
  expectError("W1 (0x30008) must be 16-byte aligned");
  SetUp();
  args.routerWeights += 2;
  expectError("router weights");
  SetUp();
  args.workspace += 16;
  expectError("256-byte aligned");
}

TEST_F(ForwardValidation, RouterInputs) {
  args.routerLogits = 0x60000;
  expectError("exactly one of the router weights");
  args.routerLogits = 0;
  args.routerWeights = 0;
  expectError("exactly one of the router weights");
}

TEST_F(ForwardValidation, TokenCounts) {
  args.tokens = -1;
  expectError("T = -1 must be 0 or more");
  args.tokens = int64_t(1) << 28; // T*K = 2^31
  expectError("more than 2^31-1 grouped rows");
}

TEST_F(ForwardValidation, WorkspaceTooSmall) {
  args.workspaceBytes -= 1;
  expectError("needs");
  SetUp();
  args.options.tokenRounding = true; // validated against the rounded layout
  config = forwardRoutingConfig(layer, true);
  expectError("with token rounding needs");
}

TEST_F(ForwardValidation, HBuffer) {
  args.h = 0x70000;
  expectError("without options.keepH");
  args.options.keepH = true;
  EXPECT_NO_THROW(validateForwardArgs(layer, config, args)); // a caller H needs less
  args.h += 4;
  expectError("H (0x70004) must be 16-byte aligned");
}

// The layer's forward restated naively: top-K of softmax, renormalised;
// act = silu(gate) * up rounded to bf16; Y = score * act W2 rounded to bf16;
// O = sum of Y over the token's experts.
std::vector<double> naiveForward(const LayerSpec &layer, const LayerHostInputs &in) {
  const int64_t T = in.tokens;
  const int E = layer.experts, d = layer.hidden, n = layer.intermediate, K = layer.router.topK;
  const int64_t u = layer.upColumns();
  auto value = [&](uint16_t bits) { return double(bf16ToFloat(bits)); };
  auto round = [](double v) { return double(bf16ToFloat(floatToBf16(float(v)))); };
  std::vector<double> out(T * d, 0.0);
  for (int64_t t = 0; t < T; ++t) {
    const float *logits = in.logits.data() + t * E;
    std::vector<int> order(E);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int a, int b) { return logits[a] > logits[b]; });
    double maxLogit = logits[order[0]], total = 0, chosen = 0;
    for (int e = 0; e < E; ++e)
      total += std::exp(logits[e] - maxLogit);
    for (int k = 0; k < K; ++k)
      chosen += std::exp(logits[order[k]] - maxLogit) / total;
    for (int k = 0; k < K; ++k) {
      const int e = order[k];
      const double score = std::exp(logits[e] - maxLogit) / total / chosen;
      std::vector<double> act(n);
      for (int j = 0; j < n; ++j) {
        double gate = 0, up = 0;
        for (int i = 0; i < d; ++i) {
          const double x = value(in.upProj.a[t * d + i]);
          gate += x * value(in.upProj.b[(e * d + i) * u + j]);
          up += x * value(in.upProj.b[(e * d + i) * u + n + j]);
        }
        act[j] = round(gate / (1 + std::exp(-gate)) * up);
      }
      for (int c = 0; c < d; ++c) {
        double y = 0;
        for (int j = 0; j < n; ++j)
          y += act[j] * value(in.downProj.b[(int64_t(e) * n + j) * d + c]);
        out[t * d + c] += round(score * y);
      }
    }
  }
  return out;
}

TEST(LayerForwardReference, MatchesANaiveForward) {
  const LayerSpec layer = parseLayer("layer t { experts = 6; hidden = 24; intermediate = 16\n"
                                     "router { top_k = 2 } }\n");
  LayerHostInputs inputs = randomLayerWeights(layer, RouterSource::UniformLogits, 3);
  randomTokens(inputs, layer, RouterSource::UniformLogits, 9, 3);
  const GroupedRows rows =
      referenceRouting(inputs.logits, forwardRoutingConfig(layer, false), inputs.tokens);
  EXPECT_EQ(rows.rows(), 9 * 2);
  std::vector<int64_t> all(9);
  std::iota(all.begin(), all.end(), 0);
  const LayerForwardReference reference = referenceLayerForward(layer, rows, inputs, all);
  const std::vector<double> naive = naiveForward(layer, inputs);
  ASSERT_EQ(reference.out.size(), naive.size());
  for (size_t i = 0; i < naive.size(); ++i)
    EXPECT_NEAR(reference.out[i], naive[i], 1e-9 + 1e-6 * std::fabs(naive[i])) << i;

  // A sample of tokens gives the same rows of O.
  const std::vector<int64_t> some = {1, 4, 8};
  const LayerForwardReference part = referenceLayerForward(layer, rows, inputs, some);
  for (size_t k = 0; k < some.size(); ++k)
    for (int j = 0; j < layer.hidden; ++j)
      EXPECT_EQ(part.out[k * layer.hidden + j], reference.out[some[k] * layer.hidden + j]);

  // The comparison reads the checked tokens' rows of O.
  std::vector<uint16_t> out(9 * layer.hidden);
  for (size_t i = 0; i < out.size(); ++i)
    out[i] = floatToBf16(static_cast<float>(naive[i]));
  EXPECT_LT(compareForward(part, out, DType::BF16, layer.hidden).relativeError, 4e-3);
}

TEST(LayerForwardReference, RoundedRoutingIsTileAligned) {
  const LayerSpec layer = parseLayer("layer s { experts = 16; hidden = 64; intermediate = 32\n"
                                     "router { top_k = 4 }\n rounding { mode = nearest } }\n");
  const RoutingKernelsConfig config = forwardRoutingConfig(layer, true);
  const int tile = config.roundingTile;
  ASSERT_GT(tile, 1);
  const int64_t T = 3000;
  const std::vector<float> logits = randomRouterLogits(T, 16, true, 5);
  const GroupedRows rows = referenceRouting(logits, config, T);
  const GroupedRows plain = referenceRouting(logits, forwardRoutingConfig(layer, false), T);
  for (int e = 0; e < 16; ++e) {
    EXPECT_TRUE(rows.counts[e] % tile == 0 || rows.counts[e] == T) << e;
    EXPECT_LT(std::abs(rows.counts[e] - plain.counts[e]), tile) << e;
  }
  EXPECT_NE(rows.counts, plain.counts);
  EXPECT_LE(rows.rows(), maxGroupedRows(config, T));
}

TEST(LayerForwardReference, SkewedLogitsConcentrateTokens) {
  const std::vector<float> logits = randomRouterLogits(2000, 64, true, 9);
  const LayerSpec layer = parseLayer("layer s { experts = 64; hidden = 64; intermediate = 32\n"
                                     "router { top_k = 4 } }\n");
  const GroupedRows rows = referenceRouting(logits, forwardRoutingConfig(layer, false), 2000);
  std::vector<int32_t> counts = rows.counts;
  std::sort(counts.rbegin(), counts.rend());
  // The 8 most popular experts take over half the rows.
  EXPECT_GT(std::accumulate(counts.begin(), counts.begin() + 8, 0), 2000 * 4 / 2);
}

TEST(LayerForwardReference, SampleTokensWithinBudget) {
  const LayerSpec layer = qwen3();
  const std::vector<float> logits = randomRouterLogits(4096, 128, false, 1);
  const GroupedRows rows = referenceRouting(logits, forwardRoutingConfig(layer, false), 4096);
  EXPECT_EQ(sampleTokens(layer, rows, int64_t(1) << 50, 1).size(), 4096u);
  const std::vector<int64_t> sample = sampleTokens(layer, rows, 1'000'000'000, 1);
  const int64_t perToken = 8 * int64_t(2048) * (1536 + 768);
  EXPECT_EQ(int64_t(sample.size()), 1'000'000'000 / perToken);
  EXPECT_TRUE(std::is_sorted(sample.begin(), sample.end()));
  EXPECT_EQ(std::set<int64_t>(sample.begin(), sample.end()).size(), sample.size());
  EXPECT_EQ(sampleTokens(layer, rows, 1, 1).size(), 16u); // at least 16
}

TEST(ForwardJob, BadOptionsAndNoGpu) {
  std::ostringstream out, err;
  ForwardRunOptions options;
  options.file = MOEJIT_SOURCE_DIR "/examples/olmoe-1b-7b.moe";
  options.routingLogits = "zipf";
  EXPECT_EQ(runForwardCommand(options, out, err), 2);
  EXPECT_NE(err.str().find("uniform or skewed"), std::string::npos);
  options.routingLogits = "uniform";
  options.file = MOEJIT_SOURCE_DIR "/examples/no-such.moe";
  EXPECT_EQ(runForwardCommand(options, out, err), kRunUsage); // unreadable, as runCommand
  options.file = MOEJIT_SOURCE_DIR "/tests/lit/dsl/errors/bool-value.moe";
  EXPECT_EQ(runForwardCommand(options, out, err), kRunBadInput); // a located spec error
  // Without a GPU the job says so and succeeds; with one it runs a small
  // forward and checks it.
  options.file = MOEJIT_SOURCE_DIR "/examples/olmoe-1b-7b.moe";
  options.tokens = 7;
  options.iters = 0;
  out.str("");
  EXPECT_EQ(runForwardCommand(options, out, err), 0) << out.str() << err.str();
}

} // namespace
} // namespace moejit
