// Router: logits = X Wr, then per token scores (softmax or sigmoid) and the
// top-K experts.
#pragma once

#include "moejit/layer/common.cuh"

namespace moejit {

enum : int { kSoftmax = 0, kSigmoid = 1 };

// logits[t][e] = sum_i x[t][i] * wr[i][e] on the tensor cores: mma.sync
// m16n8k16 with 16-bit inputs and fp32 accumulation. A block of 4 warps
// computes 64 tokens x 64 experts, warp w the tokens 16w..16w+15; each K
// step of 32 stages X [64][32] and Wr [32][64] in shared memory (rows padded
// by 16 bytes so ldmatrix's eight row addresses hit distinct banks), A
// fragments by ldmatrix.x4, B fragments by ldmatrix.x4.trans (Wr is [K][E]).
// Out-of-range tokens, experts and hidden columns load as zeros.
constexpr int kLogitsTileM = 64, kLogitsTileN = 64, kLogitsTileK = 32;
constexpr int kLogitsPadX = kLogitsTileK + 8, kLogitsPadW = kLogitsTileN + 8;

// Eight 16-bit elements at `source[0..7]` into `target`, zeros past `limit`
// (16-byte loads when `aligned`, else one element at a time).
__device__ __forceinline__ void loadEight(unsigned short *target,
                                          const unsigned short *__restrict__ source, int valid,
                                          bool aligned) {
  if (aligned && valid >= 8) {
    *reinterpret_cast<uint4 *>(target) = *reinterpret_cast<const uint4 *>(source);
    return;
  }
  for (int i = 0; i < 8; ++i)
    target[i] = i < valid ? source[i] : static_cast<unsigned short>(0);
}

// The shared-window address of `pointer` (ldmatrix's operand).
__device__ __forceinline__ unsigned sharedAddress(const void *pointer) {
  unsigned address;
  asm("{ .reg .u64 a; cvta.to.shared.u64 a, %1; cvt.u32.u64 %0, a; }"
      : "=r"(address)
      : "l"(pointer));
  return address;
}

template <int DTYPE>
__global__ void __launch_bounds__(128)
    router_logits(const unsigned short *__restrict__ x, const unsigned short *__restrict__ wr,
                  float *__restrict__ logits, int tokens, int hidden, int experts) {
  __shared__ __align__(16) unsigned short xs[kLogitsTileM][kLogitsPadX];
  __shared__ __align__(16) unsigned short ws[kLogitsTileK][kLogitsPadW];
  const int thread = threadIdx.x, lane = thread % 32, warp = thread / 32;
  const long long tokenBase = static_cast<long long>(blockIdx.y) * kLogitsTileM;
  const int expertBase = blockIdx.x * kLogitsTileN;
  // 16-byte loads where every chunk of 8 starts 16-byte aligned.
  const bool xAligned = hidden % 8 == 0 && reinterpret_cast<unsigned long long>(x) % 16 == 0;
  const bool wAligned = experts % 8 == 0 && reinterpret_cast<unsigned long long>(wr) % 16 == 0;
  float acc[kLogitsTileN / 8][4] = {};
  for (int k0 = 0; k0 < hidden; k0 += kLogitsTileK) {
    // X: 64 rows x 4 chunks of 8; Wr: 32 rows x 8 chunks of 8.
    for (int chunk = thread; chunk < kLogitsTileM * 4; chunk += 128) {
      const int row = chunk / 4, column = chunk % 4 * 8;
      const long long token = tokenBase + row;
      const int valid = token < tokens ? hidden - (k0 + column) : 0;
      loadEight(&xs[row][column], x + token * hidden + k0 + column, valid, xAligned);
    }
    for (int chunk = thread; chunk < kLogitsTileK * 8; chunk += 128) {
      const int row = chunk / 8, column = chunk % 8 * 8;
      const int valid = k0 + row < hidden ? experts - (expertBase + column) : 0;
      loadEight(&ws[row][column],
                wr + static_cast<long long>(k0 + row) * experts + expertBase + column, valid,
                wAligned);
    }
    __syncthreads();
    for (int kk = 0; kk < kLogitsTileK; kk += 16) {
      unsigned a[4];
      const unsigned aAddress = sharedAddress(&xs[warp * 16 + lane % 16][kk + lane / 16 * 8]);
      asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                   : "=r"(a[0]), "=r"(a[1]), "=r"(a[2]), "=r"(a[3])
                   : "r"(aAddress));
      for (int j = 0; j < kLogitsTileN / 8; j += 2) {
        unsigned bFrag[4];
        const unsigned bAddress = sharedAddress(&ws[kk + lane % 16][(j + lane / 16) * 8]);
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
                     : "=r"(bFrag[0]), "=r"(bFrag[1]), "=r"(bFrag[2]), "=r"(bFrag[3])
                     : "r"(bAddress));
        for (int half = 0; half < 2; ++half) {
          float *d = acc[j + half];
          if (DTYPE == kBf16)
            asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                         "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
                         : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                         : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(bFrag[2 * half]),
                           "r"(bFrag[2 * half + 1]));
          else
            asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                         "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
                         : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                         : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(bFrag[2 * half]),
                           "r"(bFrag[2 * half + 1]));
        }
      }
    }
    __syncthreads();
  }
  // Fragment j: rows lane / 4 and lane / 4 + 8, columns 8j + 2 (lane % 4) + {0, 1}.
  for (int j = 0; j < kLogitsTileN / 8; ++j)
    for (int h = 0; h < 2; ++h) {
      const long long token = tokenBase + warp * 16 + lane / 4 + 8 * h;
      const int expert = expertBase + 8 * j + 2 * (lane % 4);
      if (token >= tokens)
        continue;
      for (int e = 0; e < 2; ++e)
        if (expert + e < experts)
          logits[token * experts + expert + e] = acc[j][2 * h + e];
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
