#include "moejit/dsl.h"
#include "tests/unit/spec/test_specs.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <functional>
#include <set>

namespace moejit {
namespace {

const Target kHopper = Target::fromArch("sm_90a");

LayerSpec fixedLayer() {
  LayerSpec layer = test::smallLayer();
  layer.gemms.push_back(
      GemmSpec{GemmKind::UpProj,
               Schedule{{128, 128, 64}, 4, {2, 1}, WarpgroupMode::PingPong, Raster::AlongM, true}});
  return layer;
}

TEST(Json, EveryFieldExplicitWithDslNames) {
  nlohmann::json json = toJson(fixedLayer());
  EXPECT_EQ(json["name"], "small");
  EXPECT_EQ(json["dtype"], "bf16");
  EXPECT_EQ(json["gate_up"], "concatenated");
  EXPECT_EQ(json["router"]["top_k"], 2);
  EXPECT_EQ(json["rounding"]["mode"], "none");
  const nlohmann::json &gemm = json["gemms"][0];
  EXPECT_EQ(gemm["kind"], "up_proj");
  EXPECT_EQ(gemm["schedule"]["tile"], (nlohmann::json{{"m", 128}, {"n", 128}, {"k", 64}}));
  EXPECT_EQ(gemm["schedule"]["warpgroups"], "pingpong");
  EXPECT_EQ(gemm["schedule"]["persistent"], true);
  EXPECT_EQ(gemm["schedule"]["stores"], "direct");
  EXPECT_EQ(toJson(Spec{{fixedLayer()}})["layers"][0], json);
}

// A golden value: if this changes, every cached kernel key changes with it.
TEST(Json, HashOfAFixedSpecIsStable) {
  const std::string hash = specHash(fixedLayer());
  EXPECT_EQ(hash.size(), 32u);
  EXPECT_EQ(hash, "ebf1e46922016cf690d878459db5f2ea");
  EXPECT_EQ(contentHash(nlohmann::json::object()), contentHash(nlohmann::json::parse("{}")));
}

TEST(Json, HashChangesWithEveryField) {
  std::vector<std::function<void(LayerSpec &)>> mutations{
      [](LayerSpec &l) { l.name = "other"; },
      [](LayerSpec &l) { l.experts = 16; },
      [](LayerSpec &l) { l.hidden = 512; },
      [](LayerSpec &l) { l.intermediate = 256; },
      [](LayerSpec &l) { l.dtype = DType::FP16; },
      [](LayerSpec &l) { l.activation = Activation::GeGLU; },
      [](LayerSpec &l) { l.gateUp = GateUpLayout::Interleaved; },
      [](LayerSpec &l) { l.router.scores = ScoreFunc::Sigmoid; },
      [](LayerSpec &l) { l.router.topK = 4; },
      [](LayerSpec &l) { l.router.renormalize = false; },
      [](LayerSpec &l) { l.rounding.mode = RoundingMode::Up; },
      [](LayerSpec &l) { l.rounding.tile = 128; },
      [](LayerSpec &l) { l.gemms[0].kind = GemmKind::DX; },
      [](LayerSpec &l) { l.gemms[0].schedule.tile.m = 64; },
      [](LayerSpec &l) { l.gemms[0].schedule.tile.n = 64; },
      [](LayerSpec &l) { l.gemms[0].schedule.tile.k = 32; },
      [](LayerSpec &l) { l.gemms[0].schedule.stages = 3; },
      [](LayerSpec &l) { l.gemms[0].schedule.cluster.m = 1; },
      [](LayerSpec &l) { l.gemms[0].schedule.cluster.n = 2; },
      [](LayerSpec &l) { l.gemms[0].schedule.warpgroups = WarpgroupMode::Cooperative; },
      [](LayerSpec &l) { l.gemms[0].schedule.raster = Raster::AlongN; },
      [](LayerSpec &l) { l.gemms[0].schedule.persistent = false; },
      [](LayerSpec &l) {
        l.gemms.push_back(GemmSpec{GemmKind::DX, l.gemms[0].schedule});
      },
  };
  std::set<std::string> hashes{specHash(fixedLayer())};
  for (const auto &mutate : mutations) {
    LayerSpec layer = fixedLayer();
    mutate(layer);
    EXPECT_TRUE(hashes.insert(specHash(layer)).second) << toJson(layer).dump();
  }
}

TEST(Json, ParsedAndBuiltSpecsHashAlike) {
  Diagnostics diags;
  auto parsed = parseSpec(printSpec(Spec{{fixedLayer()}}), "t.moe", kHopper, diags);
  ASSERT_TRUE(parsed) << diags.render();
  EXPECT_EQ(specHash(parsed->layers[0]), specHash(fixedLayer()));
}

} // namespace
} // namespace moejit
