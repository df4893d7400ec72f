// Helpers shared by the layer kernels: 16-bit dtype conversions, warp and
// block reductions and scans, and order-preserving float keys. NVRTC compiles
// these without any CUDA header, so only builtins are used.
#pragma once

namespace moejit {

// DType tags used as template arguments; the values match moejit::DType.
enum : int { kBf16 = 0, kFp16 = 1 };

template <int DTYPE> __device__ __forceinline__ float halfToFloat(unsigned short bits) {
  if (DTYPE == kBf16)
    return __uint_as_float(static_cast<unsigned>(bits) << 16);
  float value;
  asm("cvt.f32.f16 %0, %1;" : "=f"(value) : "h"(bits));
  return value;
}

// Round to nearest even; NaN stays NaN.
template <int DTYPE> __device__ __forceinline__ unsigned short floatToHalf(float value) {
  unsigned short bits;
  if (DTYPE == kBf16)
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(bits) : "f"(value));
  else
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(bits) : "f"(value));
  return bits;
}

// A uint32 whose unsigned order is the float's total order (-NaN < -inf <
// ... < -0 < +0 < ... < +inf < +NaN).
__device__ __forceinline__ unsigned orderedFloatBits(float value) {
  const unsigned bits = __float_as_uint(value);
  return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

__device__ __forceinline__ float warpSum(float value) {
  for (int offset = 16; offset > 0; offset >>= 1)
    value += __shfl_xor_sync(0xffffffffu, value, offset);
  return value;
}
__device__ __forceinline__ float warpMax(float value) {
  for (int offset = 16; offset > 0; offset >>= 1)
    value = fmaxf(value, __shfl_xor_sync(0xffffffffu, value, offset));
  return value;
}
__device__ __forceinline__ unsigned long long warpMax(unsigned long long value) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    const unsigned long long other = __shfl_xor_sync(0xffffffffu, value, offset);
    value = other > value ? other : value;
  }
  return value;
}

__device__ __forceinline__ unsigned laneMaskBelow() {
  unsigned mask;
  asm("mov.u32 %0, %%lanemask_lt;" : "=r"(mask));
  return mask;
}

// Exclusive scan of one value per thread over the whole block (blockDim.x a
// multiple of 32, at most 1024); returns the block total in *total.
// `scratch` holds 33 ints of shared memory. Ends with a barrier, so scratch
// may be reused right after.
__device__ __forceinline__ int blockExclusiveScan(int value, int *scratch, int *total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warps = blockDim.x >> 5;
  int inclusive = value;
  for (int offset = 1; offset < 32; offset <<= 1) {
    const int other = __shfl_up_sync(0xffffffffu, inclusive, offset);
    if (lane >= offset)
      inclusive += other;
  }
  if (lane == 31)
    scratch[warp] = inclusive;
  __syncthreads();
  if (warp == 0) {
    int warpTotal = lane < warps ? scratch[lane] : 0;
    int warpInclusive = warpTotal;
    for (int offset = 1; offset < 32; offset <<= 1) {
      const int other = __shfl_up_sync(0xffffffffu, warpInclusive, offset);
      if (lane >= offset)
        warpInclusive += other;
    }
    if (lane < warps)
      scratch[lane] = warpInclusive - warpTotal;
    if (lane == warps - 1)
      scratch[32] = warpInclusive;
  }
  __syncthreads();
  const int result = scratch[warp] + inclusive - value;
  *total = scratch[32];
  __syncthreads();
  return result;
}

// out[i] = sum of in[0..i) for i in [0, n], in one block, tile by tile.
__device__ __forceinline__ void blockExclusiveScanArray(const int *in, int *out, long long n) {
  __shared__ int scratch[33];
  int carry = 0;
  for (long long base = 0; base < n; base += blockDim.x) {
    const long long i = base + threadIdx.x;
    const int value = i < n ? in[i] : 0;
    int total;
    const int prefix = blockExclusiveScan(value, scratch, &total);
    if (i < n)
      out[i] = carry + prefix;
    carry += total;
  }
  if (threadIdx.x == 0)
    out[n] = carry;
}

} // namespace moejit
