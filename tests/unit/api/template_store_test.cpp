// The NVRTC-compiled layer kernels in the kernel cache (makeCacheTemplateStore):
// a second process loads them from disk instead of compiling, in strict mode
// too. NVRTC needs no GPU; skips only when libnvrtc is absent.
#include "runtime/api/layer_module.h"
#include "runtime/layer/layer_kernels.h"

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <random>
#include <thread>

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

// A store whose load of the program for `first` returns only once the load
// for another arch has begun: it passes only if the cache lets two programs
// load (or compile) at the same time, and fails, after a bounded wait,
// where one request holds the cache while the other waits.
class RendezvousStore final : public TemplateStore {
public:
  explicit RendezvousStore(std::string first) : first_(std::move(first)) {}
  std::shared_ptr<const CompiledTemplates> load(const std::string &,
                                                const TemplateProgram &program) override {
    std::unique_lock lock(mutex_);
    ++loads_;
    if (program.arch != first_) {
      otherStarted_ = true;
      changed_.notify_all();
    } else if (!changed_.wait_for(lock, std::chrono::seconds(20), [&] { return otherStarted_; })) {
      overlapped_ = false;
    }
    auto compiled = std::make_shared<CompiledTemplates>();
    compiled->image = {'p', 't', 'x'};
    compiled->loweredNames.assign(program.nameExpressions.size(), program.arch);
    return compiled;
  }
  void store(const std::string &, const TemplateProgram &, const CompiledTemplates &) override {}
  bool contains(const std::string &) const override { return true; }

  int loads() const {
    std::lock_guard lock(mutex_);
    return loads_;
  }
  bool overlapped() const {
    std::lock_guard lock(mutex_);
    return overlapped_;
  }

private:
  const std::string first_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  bool otherStarted_ = false, overlapped_ = true;
  int loads_ = 0;
};

TEST(TemplateKernelCacheThreads, ProgramsLoadInParallelAndEachOnce) {
  TemplateProgram hopper{"sm_90a", {"k<1>", "k<2>"}, {}};
  TemplateProgram ampere{"sm_80", {"k<1>", "k<2>"}, {}};
  auto store = std::make_shared<RendezvousStore>(hopper.arch);
  TemplateKernelCache templates(nullptr, store, "no NVRTC (test)");

  std::vector<std::shared_ptr<const CompiledTemplates>> got(6);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < got.size(); ++i)
    threads.emplace_back([&, i] { got[i] = templates.compile(i % 2 ? ampere : hopper); });
  for (std::thread &t : threads)
    t.join();

  EXPECT_TRUE(store->overlapped()) << "the second program waited for the first one's load";
  EXPECT_EQ(store->loads(), 2) << "concurrent requests for one program loaded it more than once";
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_NE(got[i], nullptr);
    EXPECT_EQ(got[i], got[i % 2]) << "request " << i << " got another copy";
    EXPECT_EQ(got[i]->loweredNames.front(), i % 2 ? "sm_80" : "sm_90a");
  }
}

} // namespace
} // namespace moejit
