// Each semantic check fires with its field path on a C++-built spec, and the
// checker is silent on valid specs.
#include "moejit/dsl.h"
#include "tests/unit/spec/test_specs.h"

#include <gtest/gtest.h>

#include <functional>

namespace moejit {
namespace {

const Target kHopper = Target::fromArch("sm_90a");
const Target kAmpere = Target::fromArch("sm_80");

Spec validSpec() {
  Spec spec;
  spec.layers.push_back(test::smallLayer());
  return spec;
}

GemmSpec &upProj(Spec &spec) {
  for (GemmSpec &gemm : spec.layers[0].gemms)
    if (gemm.kind == GemmKind::UpProj)
      return gemm;
  throw std::logic_error("no up_proj");
}

// Resolves once, applies the mutation, then returns the diagnostics of a
// second resolve.
std::vector<Diagnostic> diagnose(const std::function<void(Spec &)> &mutate,
                                 const Target &target = kHopper) {
  Spec spec = validSpec();
  Diagnostics first;
  EXPECT_TRUE(resolveSpec(spec, target, first)) << first.render();
  mutate(spec);
  Diagnostics diags;
  EXPECT_FALSE(resolveSpec(spec, target, diags));
  return diags.all();
}

struct CheckCase {
  const char *name;
  std::function<void(Spec &)> mutate;
  const char *path;
  const Target *target = &kHopper;
};

class EachCheck : public testing::TestWithParam<CheckCase> {};

TEST_P(EachCheck, FiresOnceWithItsPath) {
  const CheckCase &c = GetParam();
  auto diags = diagnose(c.mutate, *c.target);
  ASSERT_EQ(diags.size(), 1u) << c.name;
  EXPECT_EQ(diags[0].path, c.path) << diags[0].message;
  EXPECT_EQ(diags[0].severity, Diagnostic::Severity::Error);
  EXPECT_EQ(diags[0].loc.line, 0);
}

// clang-format off
INSTANTIATE_TEST_SUITE_P(Spec, EachCheck, testing::Values(
    CheckCase{"no_layers", [](Spec &s) { s.layers.clear(); }, ""},
    CheckCase{"bad_name", [](Spec &s) { s.layers[0].name = "9 lives"; }, "9 lives"},
    CheckCase{"duplicate_layer", [](Spec &s) { s.layers.push_back(s.layers[0]); }, "small#2"},
    CheckCase{"experts_zero", [](Spec &s) { s.layers[0].experts = 0; }, "small.experts"},
    CheckCase{"experts_limit", [](Spec &s) { s.layers[0].experts = 2048; }, "small.experts"},
    CheckCase{"hidden_negative", [](Spec &s) { s.layers[0].hidden = -8; }, "small.hidden"},
    CheckCase{"hidden_alignment", [](Spec &s) { s.layers[0].hidden = 260; }, "small.hidden"},
    CheckCase{"intermediate_alignment", [](Spec &s) { s.layers[0].intermediate = 130; },
              "small.intermediate"},
    CheckCase{"index_overflow", [](Spec &s) {
                s.layers[0].hidden = 65536; s.layers[0].intermediate = 16384; },
              "small.intermediate"},
    CheckCase{"top_k_zero", [](Spec &s) { s.layers[0].router.topK = 0; }, "small.router.top_k"},
    CheckCase{"top_k_experts", [](Spec &s) { s.layers[0].router.topK = 9; },
              "small.router.top_k"},
    CheckCase{"top_k_limit", [](Spec &s) {
                s.layers[0].experts = 64; s.layers[0].router.topK = 33; },
              "small.router.top_k"},
    CheckCase{"interleaved_relu", [](Spec &s) {
                s.layers[0].activation = Activation::ReLU;
                s.layers[0].gateUp = GateUpLayout::Interleaved; },
              "small.gate_up"},
    CheckCase{"rounding_tile_multiple", [](Spec &s) {
                s.layers[0].rounding = {RoundingMode::Up, 24}; }, "small.rounding.tile"},
    CheckCase{"rounding_tile_negative", [](Spec &s) {
                s.layers[0].rounding = {RoundingMode::Up, -128}; }, "small.rounding.tile"},
    CheckCase{"rounding_tile_without_mode", [](Spec &s) {
                s.layers[0].rounding = {RoundingMode::None, 128}; }, "small.rounding.tile"},
    CheckCase{"rounding_tile_vs_up_tile", [](Spec &s) {
                upProj(s).schedule.tile.m = 128;
                s.layers[0].rounding = {RoundingMode::Nearest, 64}; }, "small.rounding.tile"},
    CheckCase{"duplicate_gemm", [](Spec &s) {
                s.layers[0].gemms.push_back(s.layers[0].gemms[0]); },
              "small.gemm.up_proj#2"},
    CheckCase{"tile_m_wgmma", [](Spec &s) { upProj(s).schedule.tile.m = 32; },
              "small.gemm.up_proj.tile.m"},
    CheckCase{"tile_m_too_big", [](Spec &s) { upProj(s).schedule.tile.m = 320; },
              "small.gemm.up_proj.tile.m"},
    CheckCase{"tile_n_multiple", [](Spec &s) { upProj(s).schedule.tile.n = 100; },
              "small.gemm.up_proj.tile.n"},
    CheckCase{"tile_n_wide", [](Spec &s) { upProj(s).schedule.tile.n = 264; },
              "small.gemm.up_proj.tile.n"},
    CheckCase{"tile_k_multiple", [](Spec &s) { upProj(s).schedule.tile.k = 24; },
              "small.gemm.up_proj.tile.k"},
    CheckCase{"tile_m_ampere", [](Spec &s) { upProj(s).schedule.tile.m = 40; },
              "small.gemm.up_proj.tile.m", &kAmpere},
    CheckCase{"stages_zero_after_resolve", [](Spec &s) { upProj(s).schedule.stages = -1; },
              "small.gemm.up_proj.stages"},
    CheckCase{"stages_nine", [](Spec &s) { upProj(s).schedule.stages = 9; },
              "small.gemm.up_proj.stages"},
    CheckCase{"cluster_power_of_two", [](Spec &s) { upProj(s).schedule.cluster = {6, 1}; },
              "small.gemm.up_proj.cluster.m"},
    CheckCase{"cluster_zero", [](Spec &s) { upProj(s).schedule.cluster = {1, 0}; },
              "small.gemm.up_proj.cluster.n"},
    CheckCase{"cluster_blocks", [](Spec &s) { upProj(s).schedule.cluster = {4, 4}; },
              "small.gemm.up_proj.cluster"},
    CheckCase{"cluster_ampere", [](Spec &s) { upProj(s).schedule.cluster = {2, 1}; },
              "small.gemm.up_proj.cluster", &kAmpere},
    CheckCase{"shared_memory", [](Spec &s) {
                upProj(s).schedule.tile = {128, 256, 256};
                upProj(s).schedule.stages = 8; }, "small.gemm.up_proj"}),
    [](const testing::TestParamInfo<CheckCase> &info) { return info.param.name; });
// clang-format on

TEST(Check, SilentOnValidSpecs) {
  for (const Target &target : {kHopper, kAmpere, Target::fromArch("sm_86")}) {
    Spec spec = validSpec();
    Diagnostics diags;
    EXPECT_TRUE(resolveSpec(spec, target, diags)) << diags.render();
    EXPECT_TRUE(diags.all().empty());
  }
  for (const std::string &name : test::exampleNames()) {
    Diagnostics diags;
    EXPECT_TRUE(parseSpec(test::readExample(name), name, kHopper, diags)) << diags.render();
    EXPECT_TRUE(diags.all().empty());
  }
}

// The shared-memory check counts the pipeline of the path that will run: a
// deep Hopper pipeline of unpadded swizzled stages fits on sm_90a (7 x 32 KB
// for 128x128x64) although the padded portable one (245 KB) would not, and
// sm_80 still rejects it.
TEST(Check, SharedMemoryOfThePathThatRuns) {
  for (const Target &target : {kHopper, kAmpere}) {
    Spec spec = validSpec();
    Diagnostics first;
    ASSERT_TRUE(resolveSpec(spec, target, first)) << first.render();
    ASSERT_FALSE(spec.layers[0].gemms.empty());
    for (GemmSpec &gemm : spec.layers[0].gemms) {
      if (gemm.kind != GemmKind::UpProj && gemm.kind != GemmKind::DownProj)
        continue; // the varlen-K weight gradients always take the portable path
      gemm.schedule.tile = {128, 128, 64};
      gemm.schedule.stages = 7;
    }
    Diagnostics diags;
    const bool valid = resolveSpec(spec, target, diags);
    if (target.hasWgmma()) {
      EXPECT_TRUE(valid) << diags.render();
    } else {
      EXPECT_FALSE(valid);
      EXPECT_NE(diags.render().find("shared memory"), std::string::npos) << diags.render();
    }
  }
}

// A tile whose warps could not keep C in registers is a spec error, not a
// compile failure (256 x 256: eight warps of 64 x 128, 256 accumulators).
TEST(Check, PortableTilesKeepTheirAccumulatorsInRegisters) {
  for (const Target &target : {kHopper, kAmpere}) {
    Spec spec = validSpec();
    Diagnostics first;
    ASSERT_TRUE(resolveSpec(spec, target, first)) << first.render();
    spec.layers[0].gemms[0].schedule.tile = {256, 256, 32};
    spec.layers[0].gemms[0].schedule.stages = 2;
    Diagnostics diags;
    EXPECT_FALSE(resolveSpec(spec, target, diags)) << target.arch;
    EXPECT_NE(diags.render().find("256 accumulator registers per thread"), std::string::npos)
        << diags.render();
  }
}

TEST(Check, ResolveFillsWhatIsMissing) {
  Spec spec = validSpec();
  spec.layers[0].gemms.push_back(GemmSpec{GemmKind::DX, Schedule{}});
  Schedule partial;
  partial.cluster = {2, 1};
  spec.layers[0].gemms.push_back(GemmSpec{GemmKind::UpProj, partial});
  Diagnostics diags;
  ASSERT_TRUE(resolveSpec(spec, kHopper, diags)) << diags.render();
  const LayerSpec &layer = spec.layers[0];
  ASSERT_EQ(layer.gemms.size(), 2u);
  EXPECT_EQ(layer.gemms[0].kind, GemmKind::UpProj);
  Schedule expected = defaultSchedule(layer, GemmKind::UpProj, kHopper);
  expected.cluster = {2, 1};
  expected.warpgroups = partial.warpgroups;
  expected.raster = partial.raster;
  expected.persistent = partial.persistent;
  EXPECT_EQ(layer.gemms[0].schedule, expected);
  EXPECT_EQ(layer.gemms[1].schedule, defaultSchedule(layer, GemmKind::DX, kHopper));
}

TEST(Check, RenderWithoutLocationNamesThePath) {
  Spec spec = validSpec();
  spec.layers[0].experts = 0;
  Diagnostics diags;
  resolveSpec(spec, kHopper, diags);
  EXPECT_EQ(diags.render(), "small.experts: error: experts must be positive, got 0\n");
}

TEST(Target, FromArch) {
  EXPECT_EQ(Target::fromArch("sm_80").maxSharedBytesPerBlock, 166912);
  EXPECT_EQ(Target::fromArch("sm_86").maxSharedBytesPerBlock, 101376);
  EXPECT_EQ(Target::fromArch("sm_89").maxSharedBytesPerBlock, 101376);
  EXPECT_EQ(Target::fromArch("sm_90").maxSharedBytesPerBlock, 232448);
  Target hopper = Target::fromArch("sm_90a");
  EXPECT_EQ(hopper, Target{});
  EXPECT_EQ(hopper.computeCapability(), 90);
  EXPECT_TRUE(hopper.hasWgmma());
  EXPECT_FALSE(Target::fromArch("sm_90").hasWgmma());
  EXPECT_EQ(Target::fromArch("sm_86").computeCapability(), 86);
  EXPECT_THROW(Target::fromArch("sm_75"), std::invalid_argument);
  EXPECT_THROW(Target::fromArch("hopper"), std::invalid_argument);
}

TEST(Names, EveryEnumRoundTrips) {
  for (GemmKind kind : kAllGemmKinds)
    EXPECT_EQ(parseGemmKind(toString(kind)), kind);
  for (Activation act : {Activation::SwiGLU, Activation::GeGLU, Activation::GeLU, Activation::ReLU,
                         Activation::None})
    EXPECT_EQ(parseActivation(toString(act)), act);
  for (RoundingMode mode :
       {RoundingMode::None, RoundingMode::Nearest, RoundingMode::Up, RoundingMode::Down})
    EXPECT_EQ(parseRoundingMode(toString(mode)), mode);
  EXPECT_EQ(parseDType("fp16"), DType::FP16);
  EXPECT_EQ(parseScoreFunc("sigmoid"), ScoreFunc::Sigmoid);
  EXPECT_EQ(parseWarpgroupMode("pingpong"), WarpgroupMode::PingPong);
  EXPECT_EQ(parseRaster("along_n"), Raster::AlongN);
  EXPECT_EQ(parseGateUpLayout("interleaved"), GateUpLayout::Interleaved);
  EXPECT_FALSE(parseDType("fp32"));
  EXPECT_TRUE(isGated(Activation::GeGLU));
  EXPECT_FALSE(isGated(Activation::GeLU));
  LayerSpec layer = test::smallLayer();
  EXPECT_EQ(layer.upColumns(), 256);
  layer.activation = Activation::ReLU;
  EXPECT_EQ(layer.upColumns(), 128);
}

} // namespace
} // namespace moejit
