// NVRTC compiles of the layer kernel templates. NVRTC needs no GPU, so this
// is CPU tier; it skips only when libnvrtc itself is absent.
#include "runtime/layer/layer_kernels.h"
#include "templates/embedded_templates.h"
#include "templates/template_compiler.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <set>

namespace moejit {
namespace {

std::shared_ptr<const Nvrtc> loadNvrtc() {
  return Nvrtc::load(nvrtcLibraryCandidates(Knobs::fromEnvironment()));
}

class TemplateCompile : public testing::Test {
protected:
  void SetUp() override {
    try {
      nvrtc_ = loadNvrtc();
    } catch (const Error &e) {
      GTEST_SKIP() << e.what();
    }
  }
  std::shared_ptr<const Nvrtc> nvrtc_;
};

TEST(Nvrtc, MissingLibraryNamesWhatWasTried) {
  try {
    Nvrtc::load({"libnvrtc-that-does-not-exist.so"});
    FAIL() << "loading a missing NVRTC succeeded";
  } catch (const Error &e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("libnvrtc-that-does-not-exist.so"), std::string::npos) << message;
    EXPECT_NE(message.find("CUDA_HOME"), std::string::npos) << message;
  }
}

TEST(EmbeddedTemplates, EveryHeaderIsThere) {
  std::set<std::string> names;
  for (const TemplateHeader &header : embeddedTemplateHeaders()) {
    EXPECT_FALSE(header.source.empty()) << header.name;
    names.emplace(header.name);
  }
  for (const char *name :
       {"moejit/layer/common.cuh", "moejit/layer/router.cuh", "moejit/layer/permutation.cuh",
        "moejit/layer/rounding.cuh", "moejit/layer/aggregation.cuh", "moejit/layer/kernels.cuh"})
    EXPECT_TRUE(names.count(name)) << name;
}

// Configs that together instantiate every template argument value in use:
// both dtypes, both score functions, renormalisation on and off, every
// rounding mode, E from 8 to 1024 and K from 1 to 32.
std::vector<RoutingKernelsConfig> configsCoveringEveryInstantiation() {
  std::vector<RoutingKernelsConfig> configs;
  auto add = [&](DType dtype, int experts, int topK, ScoreFunc scores, bool renormalize,
                 RoundingMode rounding) {
    RoutingKernelsConfig config;
    config.dtype = dtype;
    config.experts = experts;
    config.topK = topK;
    config.scores = scores;
    config.renormalize = renormalize;
    config.rounding = rounding;
    config.roundingTile = rounding == RoundingMode::None ? 0 : 128;
    configs.push_back(config);
  };
  add(DType::BF16, 128, 8, ScoreFunc::Softmax, true, RoundingMode::Nearest);
  add(DType::FP16, 8, 2, ScoreFunc::Sigmoid, false, RoundingMode::None);
  add(DType::BF16, 512, 16, ScoreFunc::Softmax, false, RoundingMode::Up);
  add(DType::BF16, 1024, 32, ScoreFunc::Sigmoid, true, RoundingMode::Down);
  add(DType::BF16, 256, 1, ScoreFunc::Softmax, true, RoundingMode::None);
  return configs;
}

TEST_F(TemplateCompile, EveryInstantiationCompilesForSm80AndSm90a) {
  for (const std::string arch : {"sm_80", "sm_90a"})
    for (const RoutingKernelsConfig &config : configsCoveringEveryInstantiation()) {
      const TemplateProgram program = layerKernelProgram(config, arch);
      SCOPED_TRACE(arch + " " + program.nameExpressions[1]);
      const CompiledTemplates compiled = compileTemplateKernels(*nvrtc_, program);
      EXPECT_TRUE(compiled.isCubin);
      EXPECT_GT(compiled.image.size(), 1000u);
      ASSERT_EQ(compiled.loweredNames.size(), program.nameExpressions.size());
      for (const std::string &lowered : compiled.loweredNames)
        EXPECT_EQ(lowered.rfind("_Z", 0), 0u) << lowered;
    }
}

TEST_F(TemplateCompile, ComputeArchGivesPtxWithTheLoweredNames) {
  const TemplateProgram program =
      layerKernelProgram(configsCoveringEveryInstantiation()[0], "compute_90a");
  const CompiledTemplates compiled = compileTemplateKernels(*nvrtc_, program);
  EXPECT_FALSE(compiled.isCubin);
  const std::string ptx(compiled.image.begin(), compiled.image.end());
  EXPECT_NE(ptx.find(".target sm_90a"), std::string::npos);
  for (const std::string &lowered : compiled.loweredNames)
    EXPECT_NE(ptx.find(".entry " + lowered), std::string::npos) << lowered;
}

TEST_F(TemplateCompile, FailureCarriesTheCompileLog) {
  TemplateProgram program;
  program.arch = "sm_90a";
  program.nameExpressions = {"moejit::router_topk<8, 9, 0, true>"}; // K > E
  try {
    compileTemplateKernels(*nvrtc_, program);
    FAIL() << "an instantiation with K > E compiled";
  } catch (const Error &e) {
    EXPECT_NE(std::string(e.what()).find("1 <= K <= min(E, 32)"), std::string::npos) << e.what();
  }
  program.arch = "gfx90a";
  EXPECT_THROW(compileTemplateKernels(*nvrtc_, program), Error);
}

TEST_F(TemplateCompile, CacheKeyCoversArchAndNamesAndCacheCompilesOnce) {
  const TemplateProgram a = layerKernelProgram(configsCoveringEveryInstantiation()[1], "sm_80");
  TemplateProgram b = a;
  b.arch = "sm_90a";
  TemplateProgram c = a;
  c.nameExpressions.pop_back();
  EXPECT_EQ(templateCacheKey(*nvrtc_, a), templateCacheKey(*nvrtc_, a));
  EXPECT_NE(templateCacheKey(*nvrtc_, a), templateCacheKey(*nvrtc_, b));
  EXPECT_NE(templateCacheKey(*nvrtc_, a), templateCacheKey(*nvrtc_, c));
  TemplateKernelCache cache(nvrtc_);
  EXPECT_EQ(cache.compile(a), cache.compile(a));
}

} // namespace
} // namespace moejit
