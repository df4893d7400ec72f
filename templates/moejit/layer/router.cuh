// Router: logits = X Wr, then per token scores (softmax or sigmoid) and the
// top-K experts.
#pragma once

#include "moejit/layer/common.cuh"

namespace moejit {

enum : int { kSoftmax = 0, kSigmoid = 1 };

constexpr int kLogitsTile = 32;

// logits[t][e] = sum_i x[t][i] * wr[i][e], fp32 accumulation. Block
// (32, 8): a 32 x 32 output tile, each thread four rows of one column.
template <int DTYPE>
__global__ void __launch_bounds__(256)
    router_logits(const unsigned short *__restrict__ x, const unsigned short *__restrict__ wr,
                  float *__restrict__ logits, int tokens, int hidden, int experts) {
  __shared__ float xs[kLogitsTile][kLogitsTile + 1];
  __shared__ float ws[kLogitsTile][kLogitsTile + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const long long tokenBase = static_cast<long long>(blockIdx.y) * kLogitsTile;
  const int expert = blockIdx.x * kLogitsTile + tx;
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  for (int k0 = 0; k0 < hidden; k0 += kLogitsTile) {
    for (int i = ty; i < kLogitsTile; i += 8) {
      const long long token = tokenBase + i;
      xs[i][tx] = token < tokens && k0 + tx < hidden
                      ? halfToFloat<DTYPE>(x[token * hidden + k0 + tx])
                      : 0.f;
      ws[i][tx] = k0 + i < hidden && expert < experts
                      ? halfToFloat<DTYPE>(wr[static_cast<long long>(k0 + i) * experts + expert])
                      : 0.f;
    }
    __syncthreads();
    for (int k = 0; k < kLogitsTile; ++k)
      for (int j = 0; j < 4; ++j)
        acc[j] = fmaf(xs[ty + 8 * j][k], ws[k][tx], acc[j]);
    __syncthreads();
  }
  for (int j = 0; j < 4; ++j) {
    const long long token = tokenBase + ty + 8 * j;
    if (token < tokens && expert < experts)
      logits[token * experts + expert] = acc[j];
  }
}

// One warp per token. Experts are ranked by logit (a total order on floats,
// NaN above +inf), ties to the lower expert id; scores are softmax over all
// E logits or the sigmoid of each. With RENORMALIZE the K chosen scores are
// divided by their sum. With scoresByExpert non-null it receives every
// score transposed, [E][T], with the sign bit set where the token chose the
// expert (token rounding reads it that way).
template <int EXPERTS, int TOPK, int SCORE_FUNC, bool RENORMALIZE>
__global__ void __launch_bounds__(256)
    router_topk(const float *__restrict__ logits, int *__restrict__ topkIds,
                float *__restrict__ topkScores, float *__restrict__ scoresByExpert, int tokens) {
  static_assert(TOPK >= 1 && TOPK <= 32 && TOPK <= EXPERTS, "1 <= K <= min(E, 32)");
  static_assert(EXPERTS <= 1024, "E <= 1024");
  constexpr int kPerLane = (EXPERTS + 31) / 32;
  const int lane = threadIdx.x & 31;
  const long long token = static_cast<long long>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (token >= tokens)
    return;
  const float *row = logits + token * EXPERTS;
  float value[kPerLane];
  for (int j = 0; j < kPerLane; ++j) {
    const int expert = j * 32 + lane;
    value[j] = expert < EXPERTS ? row[expert] : 0.f;
  }

  float maxLogit = -__int_as_float(0x7f800000), sum = 0.f;
  if (SCORE_FUNC == kSoftmax) {
    for (int j = 0; j < kPerLane; ++j)
      if (j * 32 + lane < EXPERTS)
        maxLogit = fmaxf(maxLogit, value[j]);
    maxLogit = warpMax(maxLogit);
    for (int j = 0; j < kPerLane; ++j)
      if (j * 32 + lane < EXPERTS)
        sum += expf(value[j] - maxLogit);
    sum = warpSum(sum);
  }
  auto score = [&](float logit) {
    return SCORE_FUNC == kSoftmax ? expf(logit - maxLogit) / sum : 1.f / (1.f + expf(-logit));
  };

  // Key: ordered logit, then the lower expert id wins.
  unsigned taken = 0;
  int chosen[TOPK];
  float chosenScore[TOPK];
  float chosenSum = 0.f;
  for (int k = 0; k < TOPK; ++k) {
    unsigned long long best = 0;
    for (int j = 0; j < kPerLane; ++j) {
      const int expert = j * 32 + lane;
      if (expert < EXPERTS && !(taken & (1u << j))) {
        const unsigned long long key =
            (static_cast<unsigned long long>(orderedFloatBits(value[j])) << 32) |
            (0xffffffffu - static_cast<unsigned>(expert));
        best = key > best ? key : best;
      }
    }
    best = warpMax(best);
    const int expert = static_cast<int>(0xffffffffu - static_cast<unsigned>(best & 0xffffffffu));
    if ((expert & 31) == lane)
      taken |= 1u << (expert >> 5);
    chosen[k] = expert;
  }
  // Each chosen expert's logit lives in lane expert % 32, slot expert / 32.
  for (int k = 0; k < TOPK; ++k) {
    float mine = 0.f;
    for (int j = 0; j < kPerLane; ++j)
      if (j == (chosen[k] >> 5))
        mine = value[j];
    const float logit = __shfl_sync(0xffffffffu, mine, chosen[k] & 31);
    chosenScore[k] = score(logit);
    chosenSum += chosenScore[k];
  }
  if (lane < TOPK) {
    float mine = 0.f;
    for (int k = 0; k < TOPK; ++k)
      if (k == lane)
        mine = RENORMALIZE ? chosenScore[k] / chosenSum : chosenScore[k];
    int id = 0;
    for (int k = 0; k < TOPK; ++k)
      if (k == lane)
        id = chosen[k];
    topkIds[token * TOPK + lane] = id;
    topkScores[token * TOPK + lane] = mine;
  }
  if (scoresByExpert) {
    for (int j = 0; j < kPerLane; ++j) {
      const int expert = j * 32 + lane;
      if (expert < EXPERTS) {
        const float s = score(value[j]);
        const bool isChosen = taken & (1u << j);
        scoresByExpert[static_cast<long long>(expert) * tokens + token] =
            isChosen ? __uint_as_float(__float_as_uint(s) | 0x80000000u) : s;
      }
    }
  }
}

} // namespace moejit
