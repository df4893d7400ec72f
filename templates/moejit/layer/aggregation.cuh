// Aggregation: O[t] = sum over t's grouped rows r of Y[r] (times scale[r]
// with APPLY_SCALE), fp32 accumulation, each Y row read once, no atomics.
#pragma once

#include "moejit/layer/common.cuh"

namespace moejit {

// One block per token, each thread 8 columns at a time through 16-byte
// loads (hidden % 8 == 0, 16-byte aligned Y and O).
template <int DTYPE, bool APPLY_SCALE>
__global__ void __launch_bounds__(256)
    aggregate_rows(const unsigned short *__restrict__ y, const int *__restrict__ tokenOffsets,
                   const int *__restrict__ tokenRows, const float *__restrict__ scale,
                   unsigned short *__restrict__ out, int hidden) {
  const long long token = blockIdx.x;
  const int begin = tokenOffsets[token], end = tokenOffsets[token + 1];
  const int vectors = hidden / 8;
  for (int v = threadIdx.x; v < vectors; v += blockDim.x) {
    float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    for (int i = begin; i < end; ++i) {
      const int row = tokenRows[i];
      const uint4 packed =
          *reinterpret_cast<const uint4 *>(y + static_cast<long long>(row) * hidden + v * 8);
      const float s = APPLY_SCALE ? scale[row] : 1.f;
      const unsigned words[4] = {packed.x, packed.y, packed.z, packed.w};
      for (int w = 0; w < 4; ++w) {
        acc[2 * w] = fmaf(s, halfToFloat<DTYPE>(words[w] & 0xffffu), acc[2 * w]);
        acc[2 * w + 1] = fmaf(s, halfToFloat<DTYPE>(words[w] >> 16), acc[2 * w + 1]);
      }
    }
    uint4 result;
    unsigned *words = reinterpret_cast<unsigned *>(&result);
    for (int w = 0; w < 4; ++w)
      words[w] = static_cast<unsigned>(floatToHalf<DTYPE>(acc[2 * w])) |
                 (static_cast<unsigned>(floatToHalf<DTYPE>(acc[2 * w + 1])) << 16);
    *reinterpret_cast<uint4 *>(out + token * hidden + v * 8) = result;
  }
}

} // namespace moejit
