#include "runtime/layer/layer_forward_reference.h"

#include "moejit/error.h"
#include "runtime/layer/layer_reference.h"
#include "runtime/src/half.h"
#include "runtime/src/random.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <numeric>

namespace moejit {
namespace {

// Random streams of the inputs that reference.h does not make.
constexpr uint64_t kRouterWeightsStream = 0x52577431;
constexpr uint64_t kLogitsStream = 0x4c6f6731;
constexpr uint64_t kTokenSampleStream = 0x546f6b31;
// Bias of the skewed logits: expert of popularity rank r gets -s*ln(1+r),
// so its softmax weight falls as (1+r)^-s.
constexpr double kSkewExponent = 1.2;
constexpr int64_t kMinCheckedTokens = 16;

// Rows of `tokens` tokens and no grouped rows: randomOperands then
// makes only the operands that do not depend on the routing.
GroupedRows noRows(const LayerSpec &layer, int64_t tokens) {
  GroupedRows rows;
  rows.tokens = tokens;
  rows.experts = layer.experts;
  rows.counts.assign(layer.experts, 0);
  rows.offsets.assign(layer.experts + 1, 0);
  return rows;
}

int64_t macsPerRow(const LayerSpec &layer) {
  return int64_t(layer.hidden) * (layer.upColumns() + layer.intermediate);
}

std::vector<uint16_t> toDtype(const std::vector<double> &values, DType dtype) {
  std::vector<uint16_t> bits(values.size());
  std::transform(values.begin(), values.end(), bits.begin(),
                 [&](double v) { return floatToHalf(dtype, static_cast<float>(v)); });
  return bits;
}

} // namespace

LayerHostInputs randomLayerWeights(const LayerSpec &layer, RouterSource source, uint64_t seed) {
  const GroupedRows none = noRows(layer, 0);
  LayerHostInputs inputs;
  inputs.upProj = randomOperands(GemmKind::UpProj, layer, none, seed);
  inputs.downProj = randomOperands(GemmKind::DownProj, layer, none, seed);
  if (source == RouterSource::Weights) {
    // X is uniform in (-1, 1) (variance 1/3); this bound gives logits of
    // variance about 1, so the softmax is neither flat nor one-hot.
    const double bound = 3.0 / std::sqrt(double(layer.hidden));
    RandomStream random(seed, kRouterWeightsStream);
    inputs.routerWeights.resize(int64_t(layer.hidden) * layer.experts);
    for (uint16_t &w : inputs.routerWeights)
      w = floatToHalf(layer.dtype, static_cast<float>(random.uniform(-bound, bound)));
  }
  return inputs;
}

void randomTokens(LayerHostInputs &inputs, const LayerSpec &layer, RouterSource source,
                  int64_t tokens, uint64_t seed) {
  inputs.tokens = tokens;
  // dw1's A is X [T][d] gathered, uniform in (-1, 1): the layer's
  // activations without making any weights.
  inputs.upProj.a = randomOperands(GemmKind::DW1, layer, noRows(layer, tokens), seed).a;
  inputs.logits.clear();
  if (source != RouterSource::Weights)
    inputs.logits =
        randomRouterLogits(tokens, layer.experts, source == RouterSource::SkewedLogits, seed);
}

std::vector<float> randomRouterLogits(int64_t tokens, int experts, bool skewed, uint64_t seed) {
  RandomStream random(seed, kLogitsStream);
  std::vector<double> bias(experts, 0.0);
  if (skewed) {
    std::vector<int> rank(experts);
    std::iota(rank.begin(), rank.end(), 0);
    for (int i = experts - 1; i > 0; --i)
      std::swap(rank[i], rank[random.below(uint64_t(i) + 1)]);
    for (int e = 0; e < experts; ++e)
      bias[e] = -kSkewExponent * std::log1p(double(rank[e]));
  }
  std::vector<float> logits(tokens * experts);
  for (int64_t i = 0; i < tokens * experts; ++i) {
    // Box-Muller: one normal value from two uniforms.
    const double u1 = 1.0 - random.uniform(), u2 = random.uniform();
    const double normal = std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
    logits[i] = static_cast<float>(normal + bias[i % experts]);
  }
  return logits;
}

GroupedRows referenceRouting(std::span<const float> logits, const RoutingKernelsConfig &routing,
                             int64_t tokens) {
  const TokenChoices choices = referenceTopK(logits, tokens, routing.experts, routing.topK,
                                             routing.scores, routing.renormalize);
  if (!routing.rounds())
    return groupByExpert(choices);
  const std::vector<double> raw =
      referenceRouterScores(logits, tokens, routing.experts, routing.scores);
  const std::vector<float> rawFloat(raw.begin(), raw.end());
  return referenceTokenRounding(choices, rawFloat, routing.rounding, routing.roundingTile);
}

std::vector<int64_t> sampleTokens(const LayerSpec &layer, const GroupedRows &rows, int64_t maxMacs,
                                  uint64_t seed) {
  const int64_t tokens = rows.tokens;
  std::vector<int64_t> all(tokens);
  std::iota(all.begin(), all.end(), 0);
  const double macs = double(rows.rows()) * double(macsPerRow(layer));
  if (macs <= double(maxMacs) || tokens <= kMinCheckedTokens)
    return all;
  const double perToken = macs / double(tokens);
  const int64_t count =
      std::clamp<int64_t>(int64_t(double(maxMacs) / perToken), kMinCheckedTokens, tokens);
  RandomStream random(seed, kTokenSampleStream);
  for (int64_t i = 0; i < count; ++i)
    std::swap(all[i], all[i + int64_t(random.below(uint64_t(tokens - i)))]);
  all.resize(count);
  std::sort(all.begin(), all.end());
  return all;
}

LayerForwardReference referenceLayerForward(const LayerSpec &layer, const GroupedRows &rows,
                                            LayerHostInputs &inputs,
                                            std::span<const int64_t> tokens) {
  if (rows.tokens != inputs.tokens)
    throw Error("referenceLayerForward: the routing and the inputs have different T");
  // The grouped rows of the checked tokens only, in the same expert order.
  std::vector<char> checked(rows.tokens, 0);
  for (int64_t t : tokens)
    checked[t] = 1;
  GroupedRows sub;
  sub.tokens = rows.tokens;
  sub.experts = rows.experts;
  sub.offsets.push_back(0);
  for (int e = 0; e < rows.experts; ++e) {
    for (int32_t r = rows.offsets[e]; r < rows.offsets[e + 1]; ++r)
      if (checked[rows.gather[r]]) {
        sub.gather.push_back(rows.gather[r]);
        sub.scale.push_back(rows.scale[r]);
      }
    sub.offsets.push_back(static_cast<int32_t>(sub.gather.size()));
    sub.counts.push_back(sub.offsets[e + 1] - sub.offsets[e]);
  }
  std::vector<int64_t> subRows(sub.rows());
  std::iota(subRows.begin(), subRows.end(), 0);

  const ReferenceOutput up = referenceGemm(GemmKind::UpProj, layer, sub, inputs.upProj, subRows);
  // act(H) as the GPU stores it; activation none: act = H.
  inputs.downProj.a = toDtype(layer.activation == Activation::None ? up.c : up.auxOut, layer.dtype);
  const ReferenceOutput down =
      referenceGemm(GemmKind::DownProj, layer, sub, inputs.downProj, subRows);
  const std::vector<uint16_t> y = toDtype(down.c, layer.dtype);
  const std::vector<double> all = referenceAggregation(y, layer.dtype, layer.hidden, sub, false);

  LayerForwardReference reference;
  reference.tokens.assign(tokens.begin(), tokens.end());
  reference.out.reserve(tokens.size() * layer.hidden);
  for (int64_t t : tokens)
    reference.out.insert(reference.out.end(), all.begin() + t * layer.hidden,
                         all.begin() + (t + 1) * layer.hidden);
  return reference;
}

Comparison compareForward(const LayerForwardReference &reference, std::span<const uint16_t> out,
                          DType dtype, int hidden) {
  return compareRows(reference.out, out, dtype, hidden, reference.tokens);
}

} // namespace moejit
