// Token rounding: each expert keeps the top c_e tokens of the key (chose the
// expert, raw score, lower token id), c_e its rounded count. Rounding down
// drops the expert's lowest-scored chosen tokens; rounding up adds the
// highest-scored tokens that did not choose it, with their raw score.
#pragma once

#include "moejit/layer/common.cuh"

namespace moejit {

constexpr int kRoundingThreads = 512;

// One block per expert. scoresByExpert is router_topk's [E][T] output (sign
// bit = chosen); topk* are the top-K grouped rows; offsets the rounded ones.
// Selection: a radix select on the ordered score bits finds the threshold
// score v and how many candidates at v to take; an ordered compaction then
// writes the expert's rows in token order, ties at v going to lower tokens.
__global__ void __launch_bounds__(kRoundingThreads)
    round_expert_rows(const float *__restrict__ scoresByExpert, int tokens,
                      const int *__restrict__ topkOffsets, const int *__restrict__ topkGather,
                      const float *__restrict__ topkScale, const int *__restrict__ offsets,
                      int *__restrict__ gather, float *__restrict__ scale) {
  __shared__ int histogram[256];
  __shared__ int scratch[33];
  __shared__ unsigned selectedPrefix;
  __shared__ int selectedRemaining;
  const int expert = blockIdx.x;
  const int topkBegin = topkOffsets[expert], chosenCount = topkOffsets[expert + 1] - topkBegin;
  const int out = offsets[expert], keep = offsets[expert + 1] - out;
  const float *scores = scoresByExpert + static_cast<long long>(expert) * tokens;

  if (keep == chosenCount) {
    for (int i = threadIdx.x; i < keep; i += blockDim.x) {
      gather[out + i] = topkGather[topkBegin + i];
      scale[out + i] = topkScale[topkBegin + i];
    }
    return;
  }
  // Dropping: the items are the chosen tokens (all candidates), keep the top
  // `keep`. Adding: the items are all tokens; chosen ones stay, the top
  // keep - chosenCount unchosen ones are added.
  const bool dropping = keep < chosenCount;
  const int items = dropping ? chosenCount : tokens;
  const int wanted = dropping ? keep : keep - chosenCount;
  struct Item {
    int token;
    float score;
    bool chosen;
  };
  auto item = [&](int i) {
    Item it;
    it.token = dropping ? topkGather[topkBegin + i] : i;
    const unsigned bits = __float_as_uint(scores[it.token]);
    it.chosen = bits >> 31;
    it.score = __uint_as_float(bits & 0x7fffffffu);
    return it;
  };

  if (threadIdx.x == 0) {
    selectedPrefix = 0;
    selectedRemaining = wanted;
  }
  unsigned mask = 0;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int b = threadIdx.x; b < 256; b += blockDim.x)
      histogram[b] = 0;
    __syncthreads();
    const unsigned prefix = selectedPrefix;
    for (int i = threadIdx.x; i < items; i += blockDim.x) {
      const Item it = item(i);
      const unsigned bits = orderedFloatBits(it.score);
      if ((dropping || !it.chosen) && (bits & mask) == prefix)
        atomicAdd(&histogram[(bits >> shift) & 255u], 1);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      int above = 0;
      for (int b = 255; b >= 0; --b) {
        if (above + histogram[b] >= selectedRemaining || b == 0) {
          selectedPrefix = prefix | (static_cast<unsigned>(b) << shift);
          selectedRemaining -= above;
          break;
        }
        above += histogram[b];
      }
    }
    mask |= 255u << shift;
    __syncthreads();
  }
  const unsigned threshold = selectedPrefix;
  const int tiesTaken = selectedRemaining;

  int memberCarry = 0, chosenCarry = 0, tieCarry = 0;
  for (int base = 0; base < items; base += blockDim.x) {
    const int i = base + threadIdx.x;
    const bool valid = i < items;
    Item it{0, 0.f, false};
    if (valid)
      it = item(i);
    const bool candidate = valid && (dropping || !it.chosen);
    const unsigned bits = orderedFloatBits(it.score);
    const bool tie = candidate && bits == threshold;
    int total;
    const int tieRank = tieCarry + blockExclusiveScan(tie ? 1 : 0, scratch, &total);
    tieCarry += total;
    const int chosenRank =
        chosenCarry + blockExclusiveScan(valid && it.chosen ? 1 : 0, scratch, &total);
    chosenCarry += total;
    const bool member = valid && (!candidate || bits > threshold || (tie && tieRank < tiesTaken));
    const int position = memberCarry + blockExclusiveScan(member ? 1 : 0, scratch, &total);
    memberCarry += total;
    if (member) {
      gather[out + position] = it.token;
      scale[out + position] = it.chosen ? topkScale[topkBegin + chosenRank] : it.score;
    }
  }
}

} // namespace moejit
