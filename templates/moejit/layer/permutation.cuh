// Permutation metadata: per-expert counts and offsets, the grouped rows
// (gather, scale) with the rows of one expert in token order, and the inverse
// map (each token's grouped rows, in row order) that aggregation reads.
#pragma once

#include "moejit/layer/common.cuh"

namespace moejit {

enum : int { kRoundNone = 0, kRoundNearest = 1, kRoundUp = 2, kRoundDown = 3 };

// The token count of an expert after rounding `count` to a multiple of
// `tile`: nearest (ties down), up or down; never above `tokens`.
__device__ __forceinline__ int roundedTokenCount(int count, int tile, int mode, int tokens) {
  const int below = count / tile * tile;
  const int remainder = count - below;
  int rounded = count;
  if (mode == kRoundDown || (mode == kRoundNearest && 2 * remainder <= tile))
    rounded = below;
  else if (mode == kRoundUp || mode == kRoundNearest)
    rounded = remainder == 0 ? below : below + tile;
  return rounded < tokens ? rounded : tokens;
}

// chunkCounts[c][e]: slots of tokens [c*chunkTokens, (c+1)*chunkTokens)
// that chose expert e. Dynamic shared memory: E ints.
template <int TOPK>
__global__ void __launch_bounds__(256)
    count_expert_chunks(const int *__restrict__ topkIds, int tokens, int experts, int chunkTokens,
                        int *__restrict__ chunkCounts) {
  extern __shared__ int counts[];
  for (int e = threadIdx.x; e < experts; e += blockDim.x)
    counts[e] = 0;
  __syncthreads();
  const long long begin = static_cast<long long>(blockIdx.x) * chunkTokens * TOPK;
  long long end = begin + static_cast<long long>(chunkTokens) * TOPK;
  const long long slots = static_cast<long long>(tokens) * TOPK;
  end = end < slots ? end : slots;
  for (long long slot = begin + threadIdx.x; slot < end; slot += blockDim.x)
    atomicAdd(&counts[topkIds[slot]], 1);
  __syncthreads();
  for (int e = threadIdx.x; e < experts; e += blockDim.x)
    chunkCounts[static_cast<long long>(blockIdx.x) * experts + e] = counts[e];
}

// In place: chunkCounts[c][e] becomes the rows of expert e in chunks before
// c; counts[e] the expert's total. One thread per expert.
__global__ void __launch_bounds__(256)
    scan_expert_chunks(int *__restrict__ chunkCounts, int chunks, int experts,
                       int *__restrict__ counts) {
  const int expert = blockIdx.x * blockDim.x + threadIdx.x;
  if (expert >= experts)
    return;
  int running = 0;
  for (int c = 0; c < chunks; ++c) {
    int *slot = chunkCounts + static_cast<long long>(c) * experts + expert;
    const int here = *slot;
    *slot = running;
    running += here;
  }
  counts[expert] = running;
}

// One block: out[i] = sum of in[0..i) for i in [0, n].
__global__ void __launch_bounds__(1024) exclusive_scan(const int *__restrict__ in,
                                                       int *__restrict__ out, long long n) {
  blockExclusiveScanArray(in, out, n);
}

// One block: offsets of the top-K rows, and the rounded counts and their
// offsets.
template <int ROUNDING>
__global__ void __launch_bounds__(1024)
    rounded_expert_offsets(const int *__restrict__ counts, int experts, int tokens, int tile,
                           int *__restrict__ topkOffsets, int *__restrict__ roundedCounts,
                           int *__restrict__ roundedOffsets) {
  for (int e = threadIdx.x; e < experts; e += blockDim.x)
    roundedCounts[e] = roundedTokenCount(counts[e], tile, ROUNDING, tokens);
  __syncthreads();
  blockExclusiveScanArray(counts, topkOffsets, experts);
  blockExclusiveScanArray(roundedCounts, roundedOffsets, experts);
}

// Writes the grouped rows of the top-K choice: gather[row] = token,
// scale[row] = score, the rows of an expert in token order. One warp per
// chunk of tokens; each step takes 32/K whole tokens with lanes in (token,
// slot) order, so a lane's rank among the lanes choosing the same expert is
// its rank in token order. Dynamic shared memory: (warps per block) * E ints.
template <int TOPK>
__global__ void __launch_bounds__(128)
    scatter_expert_rows(const int *__restrict__ topkIds, const float *__restrict__ topkScores,
                        int tokens, int experts, int chunkTokens,
                        const int *__restrict__ chunkBase, const int *__restrict__ offsets,
                        int *__restrict__ gather, float *__restrict__ scale) {
  constexpr int kTokensPerStep = 32 / TOPK;
  extern __shared__ int cursorStorage[];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const long long chunk = static_cast<long long>(blockIdx.x) * (blockDim.x >> 5) + warp;
  const long long firstToken = chunk * chunkTokens;
  if (firstToken >= tokens)
    return;
  int *cursor = cursorStorage + warp * experts;
  for (int e = lane; e < experts; e += 32)
    cursor[e] = offsets[e] + chunkBase[chunk * experts + e];
  __syncwarp();
  long long endToken = firstToken + chunkTokens;
  endToken = endToken < tokens ? endToken : tokens;
  const int tokenInStep = lane / TOPK, slot = lane % TOPK;
  for (long long stepToken = firstToken; stepToken < endToken; stepToken += kTokensPerStep) {
    const long long token = stepToken + tokenInStep;
    const bool active = tokenInStep < kTokensPerStep && token < endToken;
    // Inactive lanes take distinct negative keys so they match no one.
    const int expert = active ? topkIds[token * TOPK + slot] : -1 - lane;
    const unsigned same = __match_any_sync(0xffffffffu, expert);
    if (active) {
      const int row = cursor[expert] + __popc(same & laneMaskBelow());
      gather[row] = static_cast<int>(token);
      scale[row] = topkScores[token * TOPK + slot];
    }
    __syncwarp();
    if (active && (same >> lane) == 1u)
      cursor[expert] += __popc(same);
    __syncwarp();
  }
}

// tokenCounts[t] += grouped rows that gather token t (zeroed before).
__global__ void __launch_bounds__(256)
    count_token_rows(const int *__restrict__ gather, const int *__restrict__ offsets, int experts,
                     int *__restrict__ tokenCounts) {
  const int rows = offsets[experts];
  for (long long row = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; row < rows;
       row += static_cast<long long>(gridDim.x) * blockDim.x)
    atomicAdd(&tokenCounts[gather[row]], 1);
}

// Places every grouped row in its token's list (unordered; sort_token_rows
// orders each list). tokenCursor is zeroed before.
__global__ void __launch_bounds__(256)
    fill_token_rows(const int *__restrict__ gather, const int *__restrict__ offsets, int experts,
                    const int *__restrict__ tokenOffsets, int *__restrict__ tokenCursor,
                    int *__restrict__ tokenRows) {
  const int rows = offsets[experts];
  for (long long row = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; row < rows;
       row += static_cast<long long>(gridDim.x) * blockDim.x) {
    const int token = gather[row];
    tokenRows[tokenOffsets[token] + atomicAdd(&tokenCursor[token], 1)] = static_cast<int>(row);
  }
}

// Sorts each token's rows ascending, so aggregation sums in a fixed order.
// Lists hold about K rows: insertion sort.
__global__ void __launch_bounds__(256)
    sort_token_rows(const int *__restrict__ tokenOffsets, int *__restrict__ tokenRows, int tokens) {
  const long long token = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (token >= tokens)
    return;
  const int begin = tokenOffsets[token], end = tokenOffsets[token + 1];
  for (int i = begin + 1; i < end; ++i) {
    const int row = tokenRows[i];
    int j = i - 1;
    while (j >= begin && tokenRows[j] > row) {
      tokenRows[j + 1] = tokenRows[j];
      --j;
    }
    tokenRows[j + 1] = row;
  }
}

} // namespace moejit
