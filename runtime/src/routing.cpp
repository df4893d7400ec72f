#include "runtime/src/routing.h"

#include "moejit/error.h"
#include "runtime/src/random.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <numeric>
#include <sstream>

namespace moejit {

namespace {

// Random streams, one per use, so changing one use leaves the others alone.
enum : uint64_t { kStreamChoice = 1, kStreamLogits = 2, kStreamRanking = 3 };

void checkSizes(int64_t tokens, int experts, int topK) {
  if (tokens < 0)
    throw Error("token count " + std::to_string(tokens) + " is negative");
  if (experts <= 0 || topK <= 0 || topK > experts)
    throw Error("routing needs 0 < K <= E (got E = " + std::to_string(experts) +
                ", K = " + std::to_string(topK) + ")");
}

TokenChoices emptyChoices(int64_t tokens, int experts, int topK) {
  TokenChoices choices;
  choices.tokens = tokens;
  choices.experts = experts;
  choices.topK = topK;
  choices.expert.resize(tokens * topK);
  choices.score.resize(tokens * topK);
  return choices;
}

// Softmax over K random logits per token (a renormalised top-K softmax).
void assignScores(TokenChoices &choices, uint64_t seed) {
  RandomStream logits(seed, kStreamLogits);
  const int K = choices.topK;
  std::vector<double> z(K);
  for (int64_t t = 0; t < choices.tokens; ++t) {
    double total = 0;
    for (int k = 0; k < K; ++k) {
      z[k] = std::exp(logits.uniform(-2.0, 2.0));
      total += z[k];
    }
    for (int k = 0; k < K; ++k)
      choices.score[t * K + k] = static_cast<float>(z[k] / total);
  }
}

// K distinct experts per token, expert e with probability proportional to
// weight[e] among those not yet taken.
TokenChoices pickWeighted(int64_t tokens, int experts, int topK, const std::vector<double> &weight,
                          uint64_t seed) {
  TokenChoices choices = emptyChoices(tokens, experts, topK);
  RandomStream random(seed, kStreamChoice);
  std::vector<double> remaining(experts);
  for (int64_t t = 0; t < tokens; ++t) {
    remaining = weight;
    double total = std::accumulate(remaining.begin(), remaining.end(), 0.0);
    for (int k = 0; k < topK; ++k) {
      double target = random.uniform() * total;
      int chosen = -1;
      for (int e = 0; e < experts; ++e) {
        if (remaining[e] <= 0)
          continue;
        chosen = e; // the last positive one absorbs rounding at the end
        if (target < remaining[e])
          break;
        target -= remaining[e];
      }
      choices.expert[t * topK + k] = chosen;
      total -= remaining[chosen];
      remaining[chosen] = 0;
    }
  }
  assignScores(choices, seed);
  return choices;
}

bool isBlank(char c) { return c == ' ' || c == '\t' || c == '\r'; }

} // namespace

RoutingMethod RoutingMethod::parse(std::string_view text) {
  RoutingMethod method;
  if (text == "uniform")
    return method;
  if (text.starts_with("zipf:")) {
    std::string_view number = text.substr(5);
    double exponent = 0;
    auto [end, ec] = std::from_chars(number.data(), number.data() + number.size(), exponent);
    if (ec != std::errc() || end != number.data() + number.size() || !(exponent > 0) ||
        !std::isfinite(exponent))
      throw Error("routing '" + std::string(text) +
                  "': the Zipf exponent must be a positive number, e.g. zipf:1.2");
    method.kind = Kind::Zipf;
    method.zipfExponent = exponent;
    return method;
  }
  if (text.starts_with("file:") && text.size() > 5) {
    method.kind = Kind::File;
    method.path = std::string(text.substr(5));
    return method;
  }
  throw Error("unknown routing '" + std::string(text) +
              "': use uniform, zipf:S (S > 0) or file:PATH");
}

std::string RoutingMethod::describe() const {
  switch (kind) {
  case Kind::Uniform:
    return "uniform";
  case Kind::Zipf: {
    std::ostringstream text;
    text << "zipf:" << zipfExponent;
    return text.str();
  }
  case Kind::File:
    return "file:" + path;
  }
  return "?";
}

TokenChoices routeUniform(int64_t tokens, int experts, int topK, uint64_t seed) {
  checkSizes(tokens, experts, topK);
  return pickWeighted(tokens, experts, topK, std::vector<double>(experts, 1.0), seed);
}

TokenChoices routeZipf(int64_t tokens, int experts, int topK, double exponent, uint64_t seed) {
  checkSizes(tokens, experts, topK);
  if (!(exponent > 0))
    throw Error("the Zipf exponent must be positive");
  std::vector<int> ranking(experts);
  std::iota(ranking.begin(), ranking.end(), 0);
  RandomStream shuffle(seed, kStreamRanking);
  for (int i = experts - 1; i > 0; --i)
    std::swap(ranking[i], ranking[shuffle.below(i + 1)]);
  std::vector<double> weight(experts);
  for (int rank = 0; rank < experts; ++rank)
    weight[ranking[rank]] = std::pow(rank + 1.0, -exponent);
  return pickWeighted(tokens, experts, topK, weight, seed);
}

TokenChoices parseRoutingText(std::string_view text, std::string_view name, int64_t tokens,
                              int experts, int topK) {
  checkSizes(tokens, experts, topK);
  TokenChoices choices = emptyChoices(tokens, experts, topK);
  int64_t token = 0;
  int lineNumber = 0;
  auto fail = [&](const std::string &what) {
    throw Error(std::string(name) + ":" + std::to_string(lineNumber) + ": " + what);
  };
  size_t pos = 0;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string_view::npos)
      eol = text.size();
    std::string_view line = text.substr(pos, eol - pos);
    pos = eol + 1;
    ++lineNumber;
    if (size_t hash = line.find('#'); hash != std::string_view::npos)
      line = line.substr(0, hash);

    std::vector<std::string_view> fields;
    size_t i = 0;
    while (i < line.size()) {
      while (i < line.size() && isBlank(line[i]))
        ++i;
      size_t start = i;
      while (i < line.size() && !isBlank(line[i]))
        ++i;
      if (i > start)
        fields.push_back(line.substr(start, i - start));
    }
    if (fields.empty())
      continue;
    if (token >= tokens)
      fail("more token lines than --tokens " + std::to_string(tokens));
    if (static_cast<int>(fields.size()) != topK)
      fail("token " + std::to_string(token) + " has " + std::to_string(fields.size()) +
           " entries; each line needs K = " + std::to_string(topK) + " entries EXPERT:SCORE");
    for (int k = 0; k < topK; ++k) {
      std::string_view field = fields[k];
      size_t colon = field.find(':');
      if (colon == std::string_view::npos)
        fail("'" + std::string(field) + "' is not EXPERT:SCORE");
      int expert = -1;
      auto [expertEnd, expertError] = std::from_chars(field.data(), field.data() + colon, expert);
      if (expertError != std::errc() || expertEnd != field.data() + colon)
        fail("'" + std::string(field.substr(0, colon)) + "' is not an expert number");
      if (expert < 0 || expert >= experts)
        fail("expert " + std::to_string(expert) + " is out of range [0, " +
             std::to_string(experts) + ")");
      float score = 0;
      const char *scoreBegin = field.data() + colon + 1;
      const char *scoreEnd = field.data() + field.size();
      auto [end, scoreError] = std::from_chars(scoreBegin, scoreEnd, score);
      if (scoreError != std::errc() || end != scoreEnd || !std::isfinite(score))
        fail("'" + std::string(scoreBegin, scoreEnd) + "' is not a finite score");
      for (int previous = 0; previous < k; ++previous)
        if (choices.expert[token * topK + previous] == expert)
          fail("token " + std::to_string(token) + " picks expert " + std::to_string(expert) +
               " twice");
      choices.expert[token * topK + k] = expert;
      choices.score[token * topK + k] = score;
    }
    ++token;
  }
  if (token != tokens)
    throw Error(std::string(name) + ": has " + std::to_string(token) +
                " token lines but --tokens is " + std::to_string(tokens));
  return choices;
}

TokenChoices readRoutingFile(const std::string &path, int64_t tokens, int experts, int topK) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw Error("cannot read routing file '" + path + "': " + std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  return parseRoutingText(text.str(), path, tokens, experts, topK);
}

TokenChoices route(const RoutingMethod &method, int64_t tokens, int experts, int topK,
                   uint64_t seed) {
  switch (method.kind) {
  case RoutingMethod::Kind::Uniform:
    return routeUniform(tokens, experts, topK, seed);
  case RoutingMethod::Kind::Zipf:
    return routeZipf(tokens, experts, topK, method.zipfExponent, seed);
  case RoutingMethod::Kind::File:
    return readRoutingFile(method.path, tokens, experts, topK);
  }
  throw Error("unknown routing method");
}

int GroupedRows::expertOfRow(int64_t row) const {
  auto it = std::upper_bound(offsets.begin(), offsets.end(), static_cast<int32_t>(row));
  return static_cast<int>(it - offsets.begin()) - 1;
}

GroupedRows groupByExpert(const TokenChoices &choices) {
  const int64_t rows = choices.tokens * choices.topK;
  if (rows > std::numeric_limits<int32_t>::max())
    throw Error("T*K = " + std::to_string(rows) +
                " grouped rows exceed the kernels' 32-bit row indices");
  GroupedRows grouped;
  grouped.tokens = choices.tokens;
  grouped.experts = choices.experts;
  grouped.counts.assign(choices.experts, 0);
  for (int32_t expert : choices.expert)
    ++grouped.counts[expert];
  grouped.offsets.assign(choices.experts + 1, 0);
  for (int e = 0; e < choices.experts; ++e)
    grouped.offsets[e + 1] = grouped.offsets[e] + grouped.counts[e];
  grouped.gather.resize(rows);
  grouped.scale.resize(rows);
  // Counting sort by expert; visiting slots in token order keeps it stable.
  std::vector<int32_t> next(grouped.offsets.begin(), grouped.offsets.end() - 1);
  for (int64_t slot = 0; slot < rows; ++slot) {
    const int32_t row = next[choices.expert[slot]]++;
    grouped.gather[row] = static_cast<int32_t>(slot / choices.topK);
    grouped.scale[row] = choices.score[slot];
  }
  return grouped;
}

} // namespace moejit
