// Host conversions between float and the 16-bit kernel dtypes (bf16, fp16),
// rounding to nearest even; NaN stays NaN, overflow becomes infinity.
#pragma once

#include "moejit/spec.h"

#include <cstdint>

namespace moejit {

uint16_t floatToBf16(float value);
float bf16ToFloat(uint16_t bits);
uint16_t floatToFp16(float value);
float fp16ToFloat(uint16_t bits);

uint16_t floatToHalf(DType dtype, float value);
float halfToFloat(DType dtype, uint16_t bits);

// NaN or infinity (the exponent field all ones).
bool isNonFiniteHalf(DType dtype, uint16_t bits);

} // namespace moejit
