// Property: the canonical print parses back to the same spec.
#include "moejit/dsl.h"
#include "moejit/problem.h"
#include "tests/unit/spec/test_specs.h"

#include <gtest/gtest.h>

#include <random>

namespace moejit {
namespace {

const Target kHopper = Target::fromArch("sm_90a");

void expectRoundTrip(const Spec &spec, const Target &target) {
  const std::string text = printSpec(spec);
  Diagnostics diags;
  auto parsed = parseSpec(text, "printed.moe", target, diags);
  ASSERT_TRUE(parsed) << diags.render() << "\n" << text;
  EXPECT_EQ(*parsed, spec) << text;
  EXPECT_EQ(printSpec(*parsed), text);
}

TEST(RoundTrip, Examples) {
  for (const std::string &name : test::exampleNames()) {
    Diagnostics diags;
    auto spec = parseSpec(test::readExample(name), name, kHopper, diags);
    ASSERT_TRUE(spec) << diags.render();
    expectRoundTrip(*spec, kHopper);
  }
}

// Draws specs from the whole valid space; checkSpec filters the few draws
// that break a joint constraint (shared memory, rounding vs tile).
class SpecGenerator {
public:
  explicit SpecGenerator(uint32_t seed) : rng_(seed) {}

  Spec next() {
    Spec spec;
    int layers = uniform(1, 3);
    for (int i = 0; i < layers; ++i)
      spec.layers.push_back(layer("layer_" + std::to_string(i) + "_" + std::to_string(draws_++)));
    return spec;
  }

private:
  int uniform(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
  template <typename T> T pick(std::initializer_list<T> values) {
    return *(values.begin() + uniform(0, static_cast<int>(values.size()) - 1));
  }

  LayerSpec layer(std::string name) {
    LayerSpec l;
    l.name = std::move(name);
    l.experts = uniform(1, 1024);
    l.hidden = 8 * uniform(1, 2048);
    l.intermediate = 8 * uniform(1, 2048);
    l.dtype = pick({DType::BF16, DType::FP16});
    l.activation = pick({Activation::SwiGLU, Activation::GeGLU, Activation::GeLU, Activation::ReLU,
                         Activation::None});
    l.gateUp = isGated(l.activation) ? pick({GateUpLayout::Concatenated, GateUpLayout::Interleaved})
                                     : GateUpLayout::Concatenated;
    l.router.scores = pick({ScoreFunc::Softmax, ScoreFunc::Sigmoid});
    l.router.topK = uniform(1, std::min(32, l.experts));
    l.router.renormalize = uniform(0, 1) == 1;
    l.rounding.mode =
        pick({RoundingMode::None, RoundingMode::Nearest, RoundingMode::Up, RoundingMode::Down});
    for (GemmKind kind : kAllGemmKinds) {
      if (uniform(0, 2) == 0)
        continue;
      GemmSpec gemm{kind, schedule()};
      // Keep most draws within the portable warps' registers and within
      // shared memory so few are rejected.
      auto accumulators = [](const Schedule &s) {
        const WarpLayout warps = portableWarpLayout(s);
        return (s.tile.m / warps.m) * (s.tile.n / warps.n) / 32;
      };
      while (accumulators(gemm.schedule) > 128)
        gemm.schedule.tile.n > 16 ? gemm.schedule.tile.n -= 16 : gemm.schedule.tile.m /= 2;
      while (gemm.schedule.stages > 2 &&
             pipelineSharedBytes(makeGemmProblem(l, gemm)) > kHopper.maxSharedBytesPerBlock)
        --gemm.schedule.stages;
      l.gemms.push_back(gemm);
    }
    if (l.rounding.mode != RoundingMode::None && uniform(0, 1) == 1)
      l.rounding.tile = 256 * uniform(1, 4);
    return l;
  }

  Schedule schedule() {
    Schedule s;
    s.tile = {64 * uniform(1, 4), 16 * uniform(1, 16), 16 * uniform(1, 8)};
    s.stages = uniform(2, 8);
    s.cluster = {pick({1, 2, 4}), pick({1, 2})};
    s.warpgroups = pick({WarpgroupMode::Cooperative, WarpgroupMode::PingPong, WarpgroupMode::Staggered});
    s.raster = pick({Raster::AlongM, Raster::AlongN});
    s.persistent = uniform(0, 1) == 1;
    s.stores = pick({StoreMode::Direct, StoreMode::Tma});
    return s;
  }

  std::mt19937 rng_;
  int draws_ = 0;
};

TEST(RoundTrip, GeneratedSpecs) {
  SpecGenerator generator(20240611);
  int checked = 0;
  for (int i = 0; i < 600; ++i) {
    Spec spec = generator.next();
    Diagnostics diags;
    if (!resolveSpec(spec, kHopper, diags))
      continue;
    expectRoundTrip(spec, kHopper);
    ++checked;
  }
  // The generator must mostly produce valid specs to test anything.
  EXPECT_GT(checked, 500);
}

} // namespace
} // namespace moejit
