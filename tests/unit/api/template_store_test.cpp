// The NVRTC-compiled layer kernels in the kernel cache (makeCacheTemplateStore):
// a second process loads them from disk instead of compiling, in strict mode
// too. NVRTC needs no GPU; skips only when libnvrtc is absent.
#include "runtime/api/layer_module.h"
#include "runtime/layer/layer_kernels.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <random>

namespace moejit {
namespace {

// NVRTC (the test skips without it), a scratch cache directory and the
// target the programs are stored for.
class CacheTemplateStore : public ::testing::Test {
protected:
  void SetUp() override {
    try {
      nvrtc = Nvrtc::load(nvrtcLibraryCandidates(Knobs::fromEnvironment()));
    } catch (const Error &e) {
      GTEST_SKIP() << e.what();
    }
    std::random_device random;
    directory = std::filesystem::temp_directory_path() /
                ("moejit-template-store-" + std::to_string(random()));
  }
  void TearDown() override {
    std::error_code ignored;
    std::filesystem::remove_all(directory, ignored);
  }
  static TemplateProgram program(int experts, int topK) {
    RoutingKernelsConfig config;
    config.experts = experts;
    config.topK = topK;
    return layerKernelProgram(config, "sm_90a");
  }

  std::shared_ptr<const Nvrtc> nvrtc;
  std::filesystem::path directory;
  const Target target = Target::fromArch("sm_90a");
};

TEST_F(CacheTemplateStore, ASecondProcessLoadsInsteadOfCompiling) {
  const TemplateProgram program = this->program(16, 2);

  std::shared_ptr<const CompiledTemplates> first;
  {
    KernelCache cache(KernelCacheOptions{directory.string()});
    TemplateKernelCache templates(nvrtc, makeCacheTemplateStore(cache, target));
    first = templates.compile(program);
    EXPECT_EQ(templates.nvrtcCompiles(), 1u);
    EXPECT_EQ(templates.compile(program), first); // memory
    // Under its key and under the NVRTC-free one.
    EXPECT_EQ(cache.stats().entries, 2u);
  }
  // A new process: new caches over the same directory, strict.
  KernelCacheOptions strict{directory.string()};
  strict.strict = true;
  KernelCache cache(strict);
  TemplateKernelCache templates(nvrtc, makeCacheTemplateStore(cache, target));
  const std::shared_ptr<const CompiledTemplates> loaded = templates.compile(program);
  EXPECT_EQ(templates.nvrtcCompiles(), 0u);
  EXPECT_EQ(loaded->isCubin, first->isCubin);
  EXPECT_EQ(loaded->image, first->image);
  EXPECT_EQ(loaded->loweredNames, first->loweredNames);

  // Another arch is another entry, compiled.
  TemplateProgram ampere = program;
  ampere.arch = "sm_80";
  templates.compile(ampere);
  EXPECT_EQ(templates.nvrtcCompiles(), 1u);
}

TEST_F(CacheTemplateStore, AHostWithoutNvrtcServesWhatTheCacheHolds) {
  const TemplateProgram program = this->program(32, 4);
  TemplateProgram older = program; // stored by an earlier version: its own key only
  older.arch = "sm_89";

  std::shared_ptr<const CompiledTemplates> compiled;
  {
    KernelCache cache(KernelCacheOptions{directory.string()});
    const std::shared_ptr<TemplateStore> store = makeCacheTemplateStore(cache, target);
    TemplateKernelCache templates(nvrtc, store);
    compiled = templates.compile(program);
    store->store(templateCacheKey(*nvrtc, older), older, compileTemplateKernels(*nvrtc, older));
  }
  KernelCacheOptions strict{directory.string()};
  strict.strict = true;
  {
    KernelCache cache(strict);
    TemplateKernelCache templates(nullptr, makeCacheTemplateStore(cache, target),
                                  "libnvrtc.so.13: not found (test)");
    EXPECT_FALSE(templates.canCompile());
    const std::shared_ptr<const CompiledTemplates> loaded = templates.compile(program);
    EXPECT_EQ(loaded->image, compiled->image);
    EXPECT_EQ(loaded->loweredNames, compiled->loweredNames);
    EXPECT_EQ(templates.nvrtcCompiles(), 0u);
    // The older entry has no NVRTC-free copy yet; the miss names the cause and the way out.
    try {
      templates.compile(older);
      ADD_FAILURE() << "a program the cache lacks loaded without NVRTC";
    } catch (const Error &e) {
      EXPECT_NE(std::string(e.what()).find("not found (test)"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("moejit precompile"), std::string::npos) << e.what();
    }
  }
  {
    // A host with NVRTC that loads the older entry adds the NVRTC-free copy.
    KernelCache cache(strict);
    TemplateKernelCache templates(nvrtc, makeCacheTemplateStore(cache, target));
    templates.compile(older);
    EXPECT_EQ(templates.nvrtcCompiles(), 0u);
  }
  KernelCache cache(strict);
  TemplateKernelCache templates(nullptr, makeCacheTemplateStore(cache, target), "no NVRTC (test)");
  EXPECT_FALSE(templates.compile(older)->image.empty());
  EXPECT_THROW(TemplateKernelCache(nullptr, nullptr, "no NVRTC (test)"), Error);
}

} // namespace
} // namespace moejit
