#include "runtime/src/half.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <limits>

namespace moejit {
namespace {

TEST(Bf16, ExactValuesRoundTrip) {
  for (float v : {0.0f, -0.0f, 1.0f, -2.5f, 0.15625f, 65536.0f, 1e-30f})
    EXPECT_EQ(bf16ToFloat(floatToBf16(v)),
              std::bit_cast<float>(std::bit_cast<uint32_t>(v) & 0xffff0000u));
  EXPECT_EQ(floatToBf16(1.0f), 0x3f80);
  EXPECT_EQ(floatToBf16(-2.0f), 0xc000);
}

TEST(Bf16, RoundsToNearestEven) {
  // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even (1.0).
  EXPECT_EQ(floatToBf16(1.0f + 0x1.0p-8f), 0x3f80);
  // 1 + 3*2^-8 is halfway between 1+2^-7 (odd) and 1+2^-6: goes up.
  EXPECT_EQ(floatToBf16(1.0f + 3 * 0x1.0p-8f), 0x3f82);
  // Just above the tie rounds up.
  EXPECT_EQ(floatToBf16(1.0f + 0x1.0p-8f + 0x1.0p-20f), 0x3f81);
}

TEST(Bf16, SpecialValues) {
  EXPECT_TRUE(std::isnan(bf16ToFloat(floatToBf16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_EQ(floatToBf16(std::numeric_limits<float>::infinity()), 0x7f80);
  EXPECT_EQ(floatToBf16(std::numeric_limits<float>::max()), 0x7f80); // overflow -> inf
  EXPECT_TRUE(isNonFiniteHalf(DType::BF16, 0xffff));
  EXPECT_FALSE(isNonFiniteHalf(DType::BF16, 0x3f80));
}

TEST(Fp16, KnownEncodings) {
  EXPECT_EQ(floatToFp16(1.0f), 0x3c00);
  EXPECT_EQ(floatToFp16(-2.0f), 0xc000);
  EXPECT_EQ(floatToFp16(65504.0f), 0x7bff);
  EXPECT_EQ(floatToFp16(65519.0f), 0x7bff);
  EXPECT_EQ(floatToFp16(65520.0f), 0x7c00);          // the tie goes to infinity (even)
  EXPECT_EQ(floatToFp16(0x1.0p-24f), 0x0001);        // smallest subnormal
  EXPECT_EQ(floatToFp16(0x1.0p-25f), 0x0000);        // tie to even: zero
  EXPECT_EQ(floatToFp16(0x1.8p-24f), 0x0002);        // 1.5 units: tie to even 2
  EXPECT_EQ(floatToFp16(0x1.0p-14f), 0x0400);        // smallest normal
  EXPECT_EQ(floatToFp16(1.0f + 0x1.0p-11f), 0x3c00); // tie to even
  EXPECT_EQ(floatToFp16(1.0f + 3 * 0x1.0p-11f), 0x3c02);
  EXPECT_EQ(floatToFp16(std::numeric_limits<float>::quiet_NaN()) & 0x7c00, 0x7c00);
  EXPECT_TRUE(isNonFiniteHalf(DType::FP16, 0xffff));
}

TEST(Fp16, EveryPatternRoundTrips) {
  for (uint32_t bits = 0; bits < 65536; ++bits) {
    const auto h = static_cast<uint16_t>(bits);
    const float f = fp16ToFloat(h);
    if (std::isnan(f))
      continue;
    EXPECT_EQ(floatToFp16(f), h) << std::hex << bits;
  }
}

TEST(Bf16, EveryPatternRoundTrips) {
  for (uint32_t bits = 0; bits < 65536; ++bits) {
    const auto h = static_cast<uint16_t>(bits);
    const float f = bf16ToFloat(h);
    if (std::isnan(f))
      continue;
    EXPECT_EQ(floatToBf16(f), h) << std::hex << bits;
  }
}

} // namespace
} // namespace moejit
