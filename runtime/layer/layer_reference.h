// CPU references of the layer kernels: router logits and scores in float64,
// top-K and token rounding exactly (the selection rules stated plainly, by
// sorting), the inverse row map, and aggregation in float64.
#pragma once

#include "moejit/spec.h"
#include "runtime/src/routing.h"

#include <cstdint>
#include <span>
#include <vector>

namespace moejit {

// logits[t][e] = sum_i x[t][i] * wr[i][e] from the dtype's exact values.
std::vector<double> referenceRouterLogits(std::span<const uint16_t> x,
                                          std::span<const uint16_t> weights, DType dtype,
                                          int64_t tokens, int hidden, int experts);

// scores[t][e]: softmax over the row, or the sigmoid of each logit.
std::vector<double> referenceRouterScores(std::span<const float> logits, int64_t tokens,
                                          int experts, ScoreFunc scores);

// The K experts of each token, ranked by logit in the float total order
// (NaN above +inf), ties to the lower expert id; in rank order, with their
// scores (divided by the K scores' sum when renormalising).
TokenChoices referenceTopK(std::span<const float> logits, int64_t tokens, int experts, int topK,
                           ScoreFunc scores, bool renormalize);

// An expert's token count after rounding `count` to a multiple of `tile`:
// nearest (ties down), up or down, capped at `tokens` (rounding up cannot
// add more tokens than there are).
int64_t roundedTokenCount(int64_t count, int tile, RoundingMode mode, int64_t tokens);

// The rows after token rounding. Each expert keeps the top c_e tokens by the
// key (chose the expert, raw score, lower token id), c_e its rounded count:
// rounding down drops its lowest-scored chosen tokens, rounding up adds the
// highest-scored unchosen ones. Kept tokens keep their top-K score, added
// ones get their raw score. `rawScores` is [T][E]. Rows of an expert in
// token order. With mode None: groupByExpert(choices).
GroupedRows referenceTokenRounding(const TokenChoices &choices, std::span<const float> rawScores,
                                   RoundingMode mode, int tile);

// Each token's grouped rows, ascending: rows[offsets[t] .. offsets[t+1]).
struct TokenRowMap {
  std::vector<int32_t> offsets; // [T+1]
  std::vector<int32_t> rows;    // [R]
};
TokenRowMap tokenRowMap(const GroupedRows &rows);

// out[t][j] = sum over t's rows r of y[r][j] (times scale[r] when
// applyScale); y holds rows.rows() rows of `hidden` dtype values.
std::vector<double> referenceAggregation(std::span<const uint16_t> y, DType dtype, int hidden,
                                         const GroupedRows &rows, bool applyScale);

} // namespace moejit
