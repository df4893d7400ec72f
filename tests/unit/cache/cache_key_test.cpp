#include "cache_test_support.h"

#include "moejit/dsl.h"
#include "moejit/version.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <functional>
#include <map>

namespace moejit {
namespace {

using cache_test::sampleFields;

TEST(CacheKey, GoldenHashIsStable) {
  const CacheKey key(sampleFields());
  // Changing this value invalidates every cache on disk: only on purpose.
  EXPECT_EQ(key.hex(), "a5330a6aed0dbd845aa127aca047b687") << key.canonicalJson();
  EXPECT_EQ(key.hex().size(), 32u);
  EXPECT_EQ(key.hex(), contentHash(nlohmann::json::parse(key.canonicalJson())));
  EXPECT_EQ(CacheKey(sampleFields()), key);
}

TEST(CacheKey, CanonicalJsonNamesEveryField) {
  const nlohmann::json json = nlohmann::json::parse(CacheKey(sampleFields()).canonicalJson());
  for (const char *field :
       {"key_schema", "problems", "arch", "sm_count", "max_shared_bytes_per_block",
        "moejit_version", "llvm_version", "kernel_revision", "code_knobs"})
    EXPECT_TRUE(json.contains(field)) << field;
  const nlohmann::json &problem = json.at("problems").at(0);
  EXPECT_EQ(problem.at("kernel_name"), "moejit_test_UpProj");
  EXPECT_EQ(problem.at("schedule").at("tile").at("m"), 128);
  EXPECT_EQ(problem.at("epilogue"), "act_forward");
  EXPECT_EQ(problem.size(), 19u) << problem.dump();
}

TEST(CacheKey, CurrentFieldsUseThisBuild) {
  const CacheKeyFields fields =
      currentKeyFields({cache_test::sampleProblem()}, Target::fromArch("sm_80"), "fast-math=1");
  EXPECT_EQ(fields.moejitVersion, kVersion);
  EXPECT_EQ(fields.llvmVersion, kLlvmVersion);
  EXPECT_EQ(fields.kernelRevision, kKernelRevision);
  EXPECT_EQ(fields.target.arch, "sm_80");
  EXPECT_EQ(fields.codeKnobs, "fast-math=1");
}

TEST(CacheKey, DescriptionNamesKernelsArchAndKey) {
  const CacheKey key(sampleFields());
  EXPECT_EQ(key.description(), "kernel moejit_test_UpProj for sm_90a (key " + key.hex() + ")");
}

// Every field that changes the code changes the key, and no two changes
// collide.
TEST(CacheKey, EveryFieldChangesTheKey) {
  using Change = std::function<void(CacheKeyFields &)>;
  auto problem = [](std::function<void(GemmProblem &)> edit) -> Change {
    return [edit](CacheKeyFields &f) { edit(f.problems[0]); };
  };
  const std::map<std::string, Change> changes = {
      {"kind", problem([](GemmProblem &p) { p.kind = GemmKind::DH; })},
      {"dtype", problem([](GemmProblem &p) { p.dtype = DType::FP16; })},
      {"varlen", problem([](GemmProblem &p) { p.varlen = Varlen::K; })},
      {"experts", problem([](GemmProblem &p) { p.experts = 128; })},
      {"m", problem([](GemmProblem &p) { p.m = 7; })},
      {"n", problem([](GemmProblem &p) { p.n = 4096; })},
      {"k", problem([](GemmProblem &p) { p.k = 2048; })},
      {"aKContiguous", problem([](GemmProblem &p) { p.aKContiguous = false; })},
      {"bKContiguous", problem([](GemmProblem &p) { p.bKContiguous = true; })},
      {"gatherA", problem([](GemmProblem &p) { p.gatherA = false; })},
      {"gatherB", problem([](GemmProblem &p) { p.gatherB = true; })},
      {"scaleBRows", problem([](GemmProblem &p) { p.scaleBRows = true; })},
      {"epilogue", problem([](GemmProblem &p) { p.epilogue = Epilogue::Store; })},
      {"activation", problem([](GemmProblem &p) { p.activation = Activation::GeGLU; })},
      {"gateUp", problem([](GemmProblem &p) { p.gateUp = GateUpLayout::Interleaved; })},
      {"cColumns", problem([](GemmProblem &p) { p.cColumns = 4096; })},
      {"auxColumns", problem([](GemmProblem &p) { p.auxColumns = 0; })},
      {"tile.m", problem([](GemmProblem &p) { p.schedule.tile.m = 64; })},
      {"tile.n", problem([](GemmProblem &p) { p.schedule.tile.n = 256; })},
      {"tile.k", problem([](GemmProblem &p) { p.schedule.tile.k = 32; })},
      {"stages", problem([](GemmProblem &p) { p.schedule.stages = 3; })},
      {"cluster.m", problem([](GemmProblem &p) { p.schedule.cluster.m = 2; })},
      {"cluster.n", problem([](GemmProblem &p) { p.schedule.cluster.n = 2; })},
      {"warpgroups",
       problem([](GemmProblem &p) { p.schedule.warpgroups = WarpgroupMode::PingPong; })},
      {"warpgroups staggered",
       problem([](GemmProblem &p) { p.schedule.warpgroups = WarpgroupMode::Staggered; })},
      {"raster", problem([](GemmProblem &p) { p.schedule.raster = Raster::AlongN; })},
      {"persistent", problem([](GemmProblem &p) { p.schedule.persistent = true; })},
      {"stores", problem([](GemmProblem &p) { p.schedule.stores = StoreMode::Tma; })},
      {"kernelName", problem([](GemmProblem &p) { p.kernelName = "other"; })},
      {"arch", [](CacheKeyFields &f) { f.target.arch = "sm_90"; }},
      {"smCount", [](CacheKeyFields &f) { f.target.smCount = 114; }},
      {"maxShared", [](CacheKeyFields &f) { f.target.maxSharedBytesPerBlock = 101376; }},
      {"moejitVersion", [](CacheKeyFields &f) { f.moejitVersion = "0.1.1"; }},
      {"llvmVersion", [](CacheKeyFields &f) { f.llvmVersion = "22.1.1"; }},
      {"kernelRevision", [](CacheKeyFields &f) { f.kernelRevision += 1; }},
      {"codeKnobs", [](CacheKeyFields &f) { f.codeKnobs = "fast-math=1"; }},
      {"secondProblem",
       [](CacheKeyFields &f) { f.problems.push_back(cache_test::sampleProblem("second")); }},
      {"noProblems", [](CacheKeyFields &f) { f.problems.clear(); }},
  };
  const std::string base = CacheKey(sampleFields()).hex();
  std::map<std::string, std::string> seen; // hex -> change
  for (const auto &[name, change] : changes) {
    CacheKeyFields fields = sampleFields();
    change(fields);
    const std::string hex = CacheKey(fields).hex();
    EXPECT_NE(hex, base) << name << " does not change the key";
    const auto [it, inserted] = seen.emplace(hex, name);
    EXPECT_TRUE(inserted) << name << " and " << it->second << " give the same key";
  }
}

TEST(CacheKey, ProblemOrderMatters) {
  CacheKeyFields ab = sampleFields("a");
  ab.problems.push_back(cache_test::sampleProblem("b"));
  CacheKeyFields ba = sampleFields("b");
  ba.problems.push_back(cache_test::sampleProblem("a"));
  EXPECT_NE(CacheKey(ab).hex(), CacheKey(ba).hex());
}

} // namespace
} // namespace moejit
