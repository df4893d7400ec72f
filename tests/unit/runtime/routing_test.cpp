#include "moejit/error.h"
#include "runtime/src/routing.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>

namespace moejit {
namespace {

void expectWellFormed(const TokenChoices &choices, const GroupedRows &rows) {
  const int64_t R = choices.tokens * choices.topK;
  ASSERT_EQ(rows.rows(), R);
  ASSERT_EQ(rows.offsets.size(), size_t(choices.experts + 1));
  EXPECT_EQ(rows.offsets.front(), 0);
  EXPECT_EQ(rows.offsets.back(), R);
  int64_t total = 0;
  for (int e = 0; e < choices.experts; ++e) {
    EXPECT_LE(rows.offsets[e], rows.offsets[e + 1]);
    EXPECT_EQ(rows.offsets[e + 1] - rows.offsets[e], rows.counts[e]);
    total += rows.counts[e];
    // Stable: tokens ascend within an expert.
    for (int32_t r = rows.offsets[e]; r + 1 < rows.offsets[e + 1]; ++r)
      EXPECT_LT(rows.gather[r], rows.gather[r + 1]);
    for (int32_t r = rows.offsets[e]; r < rows.offsets[e + 1]; ++r)
      EXPECT_EQ(rows.expertOfRow(r), e);
  }
  EXPECT_EQ(total, R);
  for (int64_t t = 0; t < choices.tokens; ++t) {
    std::set<int32_t> distinct;
    float sum = 0;
    for (int k = 0; k < choices.topK; ++k) {
      const int32_t e = choices.expert[t * choices.topK + k];
      EXPECT_GE(e, 0);
      EXPECT_LT(e, choices.experts);
      distinct.insert(e);
      const float score = choices.score[t * choices.topK + k];
      EXPECT_GT(score, 0.0f);
      sum += score;
    }
    EXPECT_EQ(distinct.size(), size_t(choices.topK));
    EXPECT_NEAR(sum, 1.0f, 1e-5f);
  }
}

TEST(Routing, UniformIsWellFormedAndCoversExperts) {
  const TokenChoices choices = routeUniform(1000, 16, 4, 7);
  const GroupedRows rows = groupByExpert(choices);
  expectWellFormed(choices, rows);
  for (int32_t count : rows.counts)
    EXPECT_GT(count, 150); // expectation 250
}

TEST(Routing, SameSeedSameRouting) {
  EXPECT_EQ(routeUniform(100, 8, 2, 3).expert, routeUniform(100, 8, 2, 3).expert);
  EXPECT_NE(routeUniform(100, 8, 2, 3).expert, routeUniform(100, 8, 2, 4).expert);
}

TEST(Routing, ZipfLeavesExpertsEmpty) {
  const TokenChoices choices = routeZipf(64, 128, 2, 1.5, 1);
  const GroupedRows rows = groupByExpert(choices);
  expectWellFormed(choices, rows);
  const auto empty = std::count(rows.counts.begin(), rows.counts.end(), 0);
  EXPECT_GT(empty, 32);
  const auto busiest = *std::max_element(rows.counts.begin(), rows.counts.end());
  EXPECT_GT(busiest, 16);
}

TEST(Routing, ZeroAndOneToken) {
  for (int64_t tokens : {0, 1}) {
    const TokenChoices choices = routeUniform(tokens, 8, 8, 1);
    const GroupedRows rows = groupByExpert(choices);
    expectWellFormed(choices, rows);
  }
}

TEST(Routing, ParseMethod) {
  EXPECT_EQ(RoutingMethod::parse("uniform").kind, RoutingMethod::Kind::Uniform);
  const RoutingMethod zipf = RoutingMethod::parse("zipf:1.2");
  EXPECT_EQ(zipf.kind, RoutingMethod::Kind::Zipf);
  EXPECT_DOUBLE_EQ(zipf.zipfExponent, 1.2);
  EXPECT_EQ(RoutingMethod::parse("file:/tmp/r.txt").path, "/tmp/r.txt");
  for (const char *bad : {"zipf:", "zipf:-1", "zipf:x", "file:", "normal", ""})
    EXPECT_THROW(RoutingMethod::parse(bad), Error) << bad;
}

TEST(RoutingFile, Parses) {
  const TokenChoices choices = parseRoutingText("# two tokens\n"
                                                "3:0.6 1:0.4\n"
                                                "\n"
                                                "0:0.5\t2:0.5   # trailing comment\n",
                                                "r.txt", 2, 4, 2);
  EXPECT_EQ(choices.expert, (std::vector<int32_t>{3, 1, 0, 2}));
  EXPECT_FLOAT_EQ(choices.score[0], 0.6f);
  const GroupedRows rows = groupByExpert(choices);
  EXPECT_EQ(rows.offsets, (std::vector<int32_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(rows.gather, (std::vector<int32_t>{1, 0, 1, 0}));
}

std::string parseError(std::string_view text, int64_t tokens = 2) {
  try {
    parseRoutingText(text, "r.txt", tokens, 4, 2);
  } catch (const Error &e) {
    return e.what();
  }
  return "(no error)";
}

TEST(RoutingFile, ErrorsNameTheLine) {
  EXPECT_EQ(parseError("0:1 1:1\n0:1\n"),
            "r.txt:2: token 1 has 1 entries; each line needs K = 2 entries EXPERT:SCORE");
  EXPECT_EQ(parseError("0:1 4:1\n"), "r.txt:1: expert 4 is out of range [0, 4)");
  EXPECT_EQ(parseError("# c\n0:1 x:1\n"), "r.txt:2: 'x' is not an expert number");
  EXPECT_EQ(parseError("0:1 1\n"), "r.txt:1: '1' is not EXPERT:SCORE");
  EXPECT_EQ(parseError("0:1 1:abc\n"), "r.txt:1: 'abc' is not a finite score");
  EXPECT_EQ(parseError("0:1 0:1\n"), "r.txt:1: token 0 picks expert 0 twice");
  EXPECT_EQ(parseError("0:1 1:1\n", 2), "r.txt: has 1 token lines but --tokens is 2");
  EXPECT_EQ(parseError("0:1 1:1\n0:1 1:1\n", 1), "r.txt:2: more token lines than --tokens 1");
}

TEST(RoutingFile, MissingFile) {
  EXPECT_THROW(readRoutingFile("/nonexistent/routing.txt", 1, 4, 2), Error);
}

} // namespace
} // namespace moejit
