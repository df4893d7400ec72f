// The whole MoE layer forward in float64 on the CPU, built from the
// references of its parts (layer_reference.h for routing, rounding and
// aggregation, reference.h for the grouped GEMMs), and the seeded random
// host inputs of a forward run.
#pragma once

#include "moejit/spec.h"
#include "runtime/layer/layer_kernels.h"
#include "runtime/src/reference.h"
#include "runtime/src/routing.h"

#include <cstdint>
#include <span>
#include <vector>

namespace moejit {

// Where the router's logits come from in a run.
enum class RouterSource {
  Weights,       // logits = X Wr, Wr random (about unit-variance logits)
  UniformLogits, // caller-given N(0, 1) logits
  SkewedLogits,  // N(0, 1) plus a Zipf-like bias over a random expert ranking
};

// The layer's inputs on the host, as the kernels read them (dtype bits).
// The grouped GEMMs' operands are kept as reference.h's HostOperands so the
// references read them without copies of the (possibly many-GB) weights.
struct LayerHostInputs {
  int64_t tokens = 0;
  HostOperands upProj;                 // a = X [T][d], b = W1 [E][d][u]
  HostOperands downProj;               // b = W2 [E][n][d]; a is the reference's scratch (act rows)
  std::vector<uint16_t> routerWeights; // Wr [d][E] (RouterSource::Weights)
  std::vector<float> logits;           // [T][E] (the logits sources)
};

// Random weights W1, W2 (and Wr for RouterSource::Weights) of a layer:
// uniform in (-1, 1) / sqrt(the reduction length), as randomOperands makes
// them. Tokens stay 0; randomTokens adds X (and logits).
LayerHostInputs randomLayerWeights(const LayerSpec &layer, RouterSource source, uint64_t seed);
// Replaces X (uniform in (-1, 1)) and, for the logits sources, the logits
// for `tokens` tokens.
void randomTokens(LayerHostInputs &inputs, const LayerSpec &layer, RouterSource source,
                  int64_t tokens, uint64_t seed);
std::vector<float> randomRouterLogits(int64_t tokens, int experts, bool skewed, uint64_t seed);

// The routing of the whole batch from fp32 logits: top-K with the kernels'
// tie rules, then token rounding when `routing` rounds (raw scores from the
// same logits).
GroupedRows referenceRouting(std::span<const float> logits, const RoutingKernelsConfig &routing,
                             int64_t tokens);

// Tokens to check: all of them when the reference of all costs at most
// `maxMacs`, else a seeded sorted sample within that budget (at least 16).
std::vector<int64_t> sampleTokens(const LayerSpec &layer, const GroupedRows &rows, int64_t maxMacs,
                                  uint64_t seed);

struct LayerForwardReference {
  std::vector<int64_t> tokens; // the checked tokens
  std::vector<double> out;     // tokens.size() x d
};
// O for `tokens` in float64: up-projection and activation of each of their
// grouped rows, act(H) rounded to the dtype (where the GPU stores it), the
// score-scaled down-projection, Y rounded to the dtype, their sum per token.
// `inputs.downProj.a` is overwritten.
LayerForwardReference referenceLayerForward(const LayerSpec &layer, const GroupedRows &rows,
                                            LayerHostInputs &inputs,
                                            std::span<const int64_t> tokens);

// The checked tokens' rows of the GPU's O against the reference.
Comparison compareForward(const LayerForwardReference &reference, std::span<const uint16_t> out,
                          DType dtype, int hidden);

} // namespace moejit
