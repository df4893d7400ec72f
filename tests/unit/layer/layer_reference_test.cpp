#include "runtime/layer/layer_kernels.h"
#include "runtime/layer/layer_reference.h"
#include "runtime/src/half.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>

namespace moejit {
namespace {

std::vector<float> randomLogits(int64_t tokens, int experts, uint64_t seed, bool coarse) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.f, 2.f);
  std::uniform_int_distribution<int> level(0, 3);
  std::vector<float> logits(tokens * experts);
  // Coarse logits take few values, so ties are common.
  for (float &value : logits)
    value = coarse ? static_cast<float>(level(rng)) : normal(rng);
  return logits;
}

TEST(LayerReference, TopKBreaksTiesByLowerExpert) {
  const std::vector<float> logits = {1.f, 3.f, 3.f, 2.f, 3.f};
  const TokenChoices choices = referenceTopK(logits, 1, 5, 3, ScoreFunc::Softmax, false);
  EXPECT_EQ(choices.expert, (std::vector<int32_t>{1, 2, 4}));
  const TokenChoices sigmoid = referenceTopK(logits, 1, 5, 2, ScoreFunc::Sigmoid, true);
  EXPECT_EQ(sigmoid.expert, (std::vector<int32_t>{1, 2}));
  EXPECT_FLOAT_EQ(sigmoid.score[0], 0.5f);
}

TEST(LayerReference, SoftmaxScoresSumToOne) {
  const std::vector<float> logits = randomLogits(5, 16, 1, false);
  const std::vector<double> scores = referenceRouterScores(logits, 5, 16, ScoreFunc::Softmax);
  for (int t = 0; t < 5; ++t) {
    double sum = 0;
    for (int e = 0; e < 16; ++e)
      sum += scores[t * 16 + e];
    EXPECT_NEAR(sum, 1.0, 1e-12);
  }
}

TEST(LayerReference, RoundedCounts) {
  // tile 4: nearest rounds 2 (a tie) down, 3 up; the cap is T.
  EXPECT_EQ(roundedTokenCount(2, 4, RoundingMode::Nearest, 100), 0);
  EXPECT_EQ(roundedTokenCount(3, 4, RoundingMode::Nearest, 100), 4);
  EXPECT_EQ(roundedTokenCount(6, 4, RoundingMode::Nearest, 100), 4);
  EXPECT_EQ(roundedTokenCount(7, 4, RoundingMode::Nearest, 100), 8);
  EXPECT_EQ(roundedTokenCount(8, 4, RoundingMode::Nearest, 100), 8);
  EXPECT_EQ(roundedTokenCount(5, 4, RoundingMode::Up, 100), 8);
  EXPECT_EQ(roundedTokenCount(7, 4, RoundingMode::Down, 100), 4);
  EXPECT_EQ(roundedTokenCount(5, 4, RoundingMode::Up, 6), 6);
  EXPECT_EQ(roundedTokenCount(0, 4, RoundingMode::Up, 6), 0);
}

TEST(LayerReference, TokenRoundingSmallCaseByHand) {
  // T = 4, E = 2, K = 1, tile 2. Expert 0 is chosen by tokens 0, 1, 2 (3 ->
  // nearest 2: drops its lowest-scored chosen token), expert 1 by token 3
  // (1 -> nearest 0: a tie, rounds down).
  TokenChoices choices;
  choices.tokens = 4;
  choices.experts = 2;
  choices.topK = 1;
  choices.expert = {0, 0, 0, 1};
  choices.score = {0.9f, 0.6f, 0.7f, 0.8f};
  const std::vector<float> raw = {0.9f, 0.1f, 0.6f, 0.4f, 0.7f, 0.3f, 0.2f, 0.8f};
  GroupedRows down = referenceTokenRounding(choices, raw, RoundingMode::Nearest, 2);
  EXPECT_EQ(down.counts, (std::vector<int32_t>{2, 0}));
  EXPECT_EQ(down.gather, (std::vector<int32_t>{0, 2}));
  // Up: expert 0 adds its only unchosen token (3, raw 0.2), expert 1 its
  // best unchosen one (1, raw 0.4), each with its raw score.
  GroupedRows up = referenceTokenRounding(choices, raw, RoundingMode::Up, 2);
  EXPECT_EQ(up.counts, (std::vector<int32_t>{4, 2}));
  EXPECT_EQ(up.gather, (std::vector<int32_t>{0, 1, 2, 3, 1, 3}));
  EXPECT_EQ(up.scale, (std::vector<float>{0.9f, 0.6f, 0.7f, 0.2f, 0.4f, 0.8f}));
}

// The rule on random cases, checked through its consequences: counts are
// multiples of the tile (or T), differ from top-K by less than a tile; the
// rounded-down experts keep a subset of their chosen tokens with no dropped
// token above a kept one; the rounded-up ones keep all chosen tokens and no
// unchosen token left out beats an added one; ties go to lower tokens.
TEST(LayerReference, TokenRoundingRulesOnRandomCases) {
  int caseIndex = 0;
  for (int64_t tokens : {1, 7, 33, 300})
    for (int experts : {4, 16})
      for (int topK : {1, 2, 4})
        for (RoundingMode mode : {RoundingMode::Nearest, RoundingMode::Up, RoundingMode::Down})
          for (int tile : {4, 16})
            for (bool coarse : {false, true}) {
              ++caseIndex;
              SCOPED_TRACE(testing::Message()
                           << "T " << tokens << " E " << experts << " K " << topK << " mode "
                           << toString(mode) << " tile " << tile << " coarse " << coarse);
              const std::vector<float> logits = randomLogits(tokens, experts, caseIndex, coarse);
              const TokenChoices choices =
                  referenceTopK(logits, tokens, experts, topK, ScoreFunc::Softmax, true);
              const std::vector<double> scores64 =
                  referenceRouterScores(logits, tokens, experts, ScoreFunc::Softmax);
              const std::vector<float> raw(scores64.begin(), scores64.end());
              const GroupedRows topk = groupByExpert(choices);
              const GroupedRows rounded = referenceTokenRounding(choices, raw, mode, tile);
              ASSERT_EQ(rounded.offsets.back(), rounded.rows());
              for (int e = 0; e < experts; ++e) {
                const int64_t f = topk.counts[e], c = rounded.counts[e];
                EXPECT_TRUE(c % tile == 0 || c == tokens) << "expert " << e;
                EXPECT_LT(std::abs(c - f), tile) << "expert " << e;
                if (mode == RoundingMode::Up) {
                  EXPECT_GE(c, f);
                }
                if (mode == RoundingMode::Down) {
                  EXPECT_LE(c, f);
                }
                std::map<int32_t, float> chosen, kept;
                for (int32_t r = topk.offsets[e]; r < topk.offsets[e + 1]; ++r)
                  chosen[topk.gather[r]] = topk.scale[r];
                for (int32_t r = rounded.offsets[e]; r < rounded.offsets[e + 1]; ++r) {
                  if (r > rounded.offsets[e]) {
                    EXPECT_LT(rounded.gather[r - 1], rounded.gather[r]);
                  }
                  kept[rounded.gather[r]] = rounded.scale[r];
                }
                auto rawOf = [&](int32_t t) { return raw[t * experts + e]; };
                // (raw score, lower token) order: a beats b.
                auto beats = [&](int32_t a, int32_t b) {
                  return rawOf(a) != rawOf(b) ? rawOf(a) > rawOf(b) : a < b;
                };
                for (auto [t, s] : kept)
                  EXPECT_EQ(s, chosen.count(t) ? chosen[t] : rawOf(t)) << "token " << t;
                for (int32_t t = 0; t < tokens; ++t) {
                  const bool isChosen = chosen.count(t), isKept = kept.count(t);
                  if (c <= f) {
                    EXPECT_TRUE(!isKept || isChosen);
                    if (isChosen && !isKept) {
                      for (auto [other, s] : kept)
                        EXPECT_TRUE(beats(other, t)) << other << " over " << t;
                    }
                  } else {
                    EXPECT_TRUE(!isChosen || isKept);
                    if (!isChosen && isKept)
                      for (int32_t other = 0; other < tokens; ++other)
                        if (!chosen.count(other) && !kept.count(other)) {
                          EXPECT_TRUE(beats(t, other)) << t << " over " << other;
                        }
                  }
                }
              }
            }
}

TEST(LayerReference, TokenRowMapAndAggregation) {
  const TokenChoices choices = routeUniform(9, 6, 2, 3);
  const GroupedRows rows = groupByExpert(choices);
  const TokenRowMap map = tokenRowMap(rows);
  ASSERT_EQ(map.offsets.size(), 10u);
  for (int t = 0; t < 9; ++t) {
    ASSERT_EQ(map.offsets[t + 1] - map.offsets[t], 2);
    for (int i = map.offsets[t]; i < map.offsets[t + 1]; ++i)
      EXPECT_EQ(rows.gather[map.rows[i]], t);
    EXPECT_LT(map.rows[map.offsets[t]], map.rows[map.offsets[t] + 1]);
  }
  const int hidden = 8;
  std::vector<uint16_t> y(rows.rows() * hidden);
  for (size_t i = 0; i < y.size(); ++i)
    y[i] = floatToBf16(static_cast<float>(i % 5));
  const std::vector<double> out = referenceAggregation(y, DType::BF16, hidden, rows, true);
  for (int t = 0; t < 9; ++t)
    for (int j = 0; j < hidden; ++j) {
      double expected = 0;
      for (int64_t r = 0; r < rows.rows(); ++r)
        if (rows.gather[r] == t)
          expected += rows.scale[r] * static_cast<double>((r * hidden + j) % 5);
      EXPECT_NEAR(out[t * hidden + j], expected, 1e-9);
    }
}

TEST(LayerWorkspace, LayoutIsAlignedAndDisjoint) {
  RoutingKernelsConfig config;
  config.experts = 128;
  config.topK = 8;
  config.rounding = RoundingMode::Nearest;
  config.roundingTile = 128;
  const RoutingWorkspaceLayout layout = routingWorkspaceLayout(config, 4096);
  EXPECT_EQ(layout.maxRows, 4096 * 8 + 128 * 127);
  EXPECT_EQ(layout.bytes % 256, 0u);
  const RoutingBuffers b = layout.at(0, 4096);
  const std::vector<std::pair<CUdeviceptr, int64_t>> buffers = {
      {b.logits, 4096 * 128},    {b.topkIds, 4096 * 8},
      {b.topkScores, 4096 * 8},  {b.scoresByExpert, 4096 * 128},
      {b.chunkCounts, 16 * 128}, {b.topkCounts, 128},
      {b.topkOffsets, 129},      {b.topkGather, 4096 * 8},
      {b.topkScale, 4096 * 8},   {b.counts, 128},
      {b.offsets, 129},          {b.gather, layout.maxRows},
      {b.scale, layout.maxRows}, {b.tokenCounts, 4096},
      {b.tokenOffsets, 4097},    {b.tokenRows, layout.maxRows}};
  for (size_t i = 0; i < buffers.size(); ++i) {
    EXPECT_EQ(buffers[i].first % 256, 0u);
    EXPECT_LE(buffers[i].first + buffers[i].second * 4, layout.bytes);
    for (size_t j = i + 1; j < buffers.size(); ++j)
      EXPECT_TRUE(buffers[i].first + buffers[i].second * 4 <= buffers[j].first ||
                  buffers[j].first + buffers[j].second * 4 <= buffers[i].first)
          << i << " overlaps " << j;
  }
}

TEST(LayerWorkspace, RejectsBadConfigs) {
  RoutingKernelsConfig config;
  config.experts = 8;
  config.topK = 9;
  EXPECT_THROW(config.validate(), Error);
  config.topK = 2;
  config.rounding = RoundingMode::Up;
  EXPECT_THROW(config.validate(), Error);
  config.roundingTile = 128;
  EXPECT_NO_THROW(config.validate());
  EXPECT_THROW(routingWorkspaceLayout(config, int64_t{1} << 31), Error);
}

} // namespace
} // namespace moejit
