// Host-side token routing for runs and tests: which K experts each token
// picks (with its router score), and the grouped-row layout the kernels read
// (docs/kernel-abi.md: offsets, gather, scale).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace moejit {

// How tokens pick experts. Text forms: "uniform", "zipf:S" (S > 0),
// "file:PATH".
struct RoutingMethod {
  enum class Kind { Uniform, Zipf, File };
  Kind kind = Kind::Uniform;
  double zipfExponent = 0; // Zipf
  std::string path;        // File

  // Throws Error with what the accepted forms are.
  static RoutingMethod parse(std::string_view text);
  std::string describe() const;
};

// The top-K choice of every token: expert[t*K + k] with score[t*K + k].
struct TokenChoices {
  int64_t tokens = 0;
  int experts = 0;
  int topK = 0;
  std::vector<int32_t> expert;
  std::vector<float> score;
};

// Each token picks K distinct experts uniformly; scores are a softmax over
// the chosen experts' random logits (positive, summing to 1 per token).
TokenChoices routeUniform(int64_t tokens, int experts, int topK, uint64_t seed);

// Expert popularity follows Zipf's law with `exponent` over a seeded random
// ranking of the experts (so the unpopular ones, often with no tokens at
// all, are spread over the expert ids); tokens pick K distinct experts by
// popularity; scores as in routeUniform.
TokenChoices routeZipf(int64_t tokens, int experts, int topK, double exponent, uint64_t seed);

// Reads a routing file. Format (text, one token per line, in token order):
//
//   # comments and blank lines are ignored
//   3:0.6 17:0.4        <- token 0: expert 3 with score 0.6, expert 17 with 0.4
//   0:0.5 5:0.5         <- token 1
//
// Each line holds exactly `topK` entries EXPERT:SCORE separated by spaces or
// tabs, with distinct experts in [0, experts) and finite scores. The file
// must have exactly `tokens` token lines. Throws Error "PATH:LINE: ..." on
// malformed input.
TokenChoices readRoutingFile(const std::string &path, int64_t tokens, int experts, int topK);
// The same for text already in memory (`name` is used in messages).
TokenChoices parseRoutingText(std::string_view text, std::string_view name, int64_t tokens,
                              int experts, int topK);

TokenChoices route(const RoutingMethod &method, int64_t tokens, int experts, int topK,
                   uint64_t seed);

// Rows grouped by expert: R = tokens * K rows, expert e owning rows
// [offsets[e], offsets[e+1]); within an expert rows are in token order.
struct GroupedRows {
  int64_t tokens = 0;
  int experts = 0;
  std::vector<int32_t> counts;  // [E]
  std::vector<int32_t> offsets; // [E+1]
  std::vector<int32_t> gather;  // [R] token of each row
  std::vector<float> scale;     // [R] router score of each row
  int64_t rows() const { return static_cast<int64_t>(gather.size()); }
  // The expert that owns grouped row `row`.
  int expertOfRow(int64_t row) const;
};

// Throws Error when R does not fit the kernel ABI's int32 row indices.
GroupedRows groupByExpert(const TokenChoices &choices);

} // namespace moejit
