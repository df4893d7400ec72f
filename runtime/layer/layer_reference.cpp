#include "runtime/layer/layer_reference.h"

#include "moejit/error.h"
#include "runtime/src/half.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <numeric>
#include <tuple>

namespace moejit {
namespace {

// The float total order as an unsigned key (the kernels use the same one).
uint32_t orderedFloatBits(float value) {
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

} // namespace

std::vector<double> referenceRouterLogits(std::span<const uint16_t> x,
                                          std::span<const uint16_t> weights, DType dtype,
                                          int64_t tokens, int hidden, int experts) {
  std::vector<double> logits(tokens * experts, 0.0);
  std::vector<double> w(weights.size());
  std::transform(weights.begin(), weights.end(), w.begin(),
                 [&](uint16_t bits) { return halfToFloat(dtype, bits); });
  for (int64_t t = 0; t < tokens; ++t)
    for (int i = 0; i < hidden; ++i) {
      const double xi = halfToFloat(dtype, x[t * hidden + i]);
      for (int e = 0; e < experts; ++e)
        logits[t * experts + e] += xi * w[static_cast<int64_t>(i) * experts + e];
    }
  return logits;
}

std::vector<double> referenceRouterScores(std::span<const float> logits, int64_t tokens,
                                          int experts, ScoreFunc scores) {
  std::vector<double> out(tokens * experts);
  for (int64_t t = 0; t < tokens; ++t) {
    const float *row = logits.data() + t * experts;
    double *result = out.data() + t * experts;
    if (scores == ScoreFunc::Sigmoid) {
      for (int e = 0; e < experts; ++e)
        result[e] = 1.0 / (1.0 + std::exp(-static_cast<double>(row[e])));
      continue;
    }
    const double maxLogit = *std::max_element(row, row + experts);
    double sum = 0;
    for (int e = 0; e < experts; ++e)
      sum += result[e] = std::exp(row[e] - maxLogit);
    for (int e = 0; e < experts; ++e)
      result[e] /= sum;
  }
  return out;
}

TokenChoices referenceTopK(std::span<const float> logits, int64_t tokens, int experts, int topK,
                           ScoreFunc scores, bool renormalize) {
  const std::vector<double> score = referenceRouterScores(logits, tokens, experts, scores);
  TokenChoices choices;
  choices.tokens = tokens;
  choices.experts = experts;
  choices.topK = topK;
  std::vector<int32_t> order(experts);
  for (int64_t t = 0; t < tokens; ++t) {
    const float *row = logits.data() + t * experts;
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + topK, order.end(), [&](int32_t a, int32_t b) {
      const uint32_t ka = orderedFloatBits(row[a]), kb = orderedFloatBits(row[b]);
      return ka != kb ? ka > kb : a < b;
    });
    double sum = 0;
    for (int k = 0; k < topK; ++k)
      sum += score[t * experts + order[k]];
    for (int k = 0; k < topK; ++k) {
      const double s = score[t * experts + order[k]];
      choices.expert.push_back(order[k]);
      choices.score.push_back(static_cast<float>(renormalize ? s / sum : s));
    }
  }
  return choices;
}

int64_t roundedTokenCount(int64_t count, int tile, RoundingMode mode, int64_t tokens) {
  const int64_t below = count / tile * tile, remainder = count - below;
  const int64_t above = remainder == 0 ? below : below + tile;
  int64_t rounded = count;
  switch (mode) {
  case RoundingMode::None:
    break;
  case RoundingMode::Down:
    rounded = below;
    break;
  case RoundingMode::Up:
    rounded = above;
    break;
  case RoundingMode::Nearest:
    rounded = 2 * remainder <= tile ? below : above;
    break;
  }
  return std::min(rounded, tokens);
}

GroupedRows referenceTokenRounding(const TokenChoices &choices, std::span<const float> rawScores,
                                   RoundingMode mode, int tile) {
  if (mode == RoundingMode::None)
    return groupByExpert(choices);
  if (tile < 1)
    throw Error("token rounding needs a tile of at least 1 token");
  const int64_t tokens = choices.tokens;
  const int experts = choices.experts;
  // chosenScore[e][t]: the top-K score, NaN where t did not choose e.
  std::vector<std::vector<float>> chosenScore(experts, std::vector<float>(tokens, NAN));
  std::vector<int64_t> topkCount(experts, 0);
  for (int64_t slot = 0; slot < tokens * choices.topK; ++slot) {
    const int32_t e = choices.expert[slot];
    chosenScore[e][slot / choices.topK] = choices.score[slot];
    ++topkCount[e];
  }

  GroupedRows grouped;
  grouped.tokens = tokens;
  grouped.experts = experts;
  grouped.offsets.push_back(0);
  std::vector<int32_t> candidates(tokens);
  for (int e = 0; e < experts; ++e) {
    const int64_t keep = roundedTokenCount(topkCount[e], tile, mode, tokens);
    auto key = [&](int32_t t) {
      const bool chose = !std::isnan(chosenScore[e][t]);
      return std::make_tuple(chose, orderedFloatBits(rawScores[t * experts + e]), -t);
    };
    std::iota(candidates.begin(), candidates.end(), 0);
    std::nth_element(candidates.begin(), candidates.begin() + keep, candidates.end(),
                     [&](int32_t a, int32_t b) { return key(a) > key(b); });
    std::sort(candidates.begin(), candidates.begin() + keep);
    for (int64_t i = 0; i < keep; ++i) {
      const int32_t t = candidates[i];
      const float chosen = chosenScore[e][t];
      grouped.gather.push_back(t);
      grouped.scale.push_back(std::isnan(chosen) ? rawScores[t * experts + e] : chosen);
    }
    grouped.counts.push_back(static_cast<int32_t>(keep));
    grouped.offsets.push_back(static_cast<int32_t>(grouped.gather.size()));
  }
  return grouped;
}

TokenRowMap tokenRowMap(const GroupedRows &rows) {
  TokenRowMap map;
  map.offsets.assign(rows.tokens + 1, 0);
  for (int32_t token : rows.gather)
    ++map.offsets[token + 1];
  std::partial_sum(map.offsets.begin(), map.offsets.end(), map.offsets.begin());
  map.rows.resize(rows.rows());
  std::vector<int32_t> next(map.offsets.begin(), map.offsets.end() - 1);
  for (int64_t row = 0; row < rows.rows(); ++row)
    map.rows[next[rows.gather[row]]++] = static_cast<int32_t>(row);
  return map;
}

std::vector<double> referenceAggregation(std::span<const uint16_t> y, DType dtype, int hidden,
                                         const GroupedRows &rows, bool applyScale) {
  std::vector<double> out(rows.tokens * hidden, 0.0);
  for (int64_t row = 0; row < rows.rows(); ++row) {
    const double s = applyScale ? rows.scale[row] : 1.0;
    double *target = out.data() + static_cast<int64_t>(rows.gather[row]) * hidden;
    for (int j = 0; j < hidden; ++j)
      target[j] += s * halfToFloat(dtype, y[row * hidden + j]);
  }
  return out;
}

} // namespace moejit
