// Reproducible random numbers that do not depend on the standard library's
// distributions or on how work is split over threads.
#pragma once

#include <cstdint>

namespace moejit {

// SplitMix64's finaliser: a bijective mix of 64 bits.
constexpr uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// The value number `index` of the stream (`seed`, `stream`).
constexpr uint64_t counterRandom(uint64_t seed, uint64_t stream, uint64_t index) {
  return mix64(mix64(seed ^ mix64(stream)) + index);
}

// [0, 1) with 53 random bits.
constexpr double unitInterval(uint64_t bits) { return double(bits >> 11) * 0x1.0p-53; }

// A sequential generator for code that draws one value after another.
class RandomStream {
public:
  RandomStream(uint64_t seed, uint64_t stream) : seed_(seed), stream_(stream) {}
  uint64_t next() { return counterRandom(seed_, stream_, index_++); }
  double uniform() { return unitInterval(next()); }         // [0, 1)
  uint64_t below(uint64_t bound) { return next() % bound; } // [0, bound), bound small
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }

private:
  uint64_t seed_, stream_, index_ = 0;
};

} // namespace moejit
