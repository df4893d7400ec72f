// Every family on every example at T = 0, 1, 127, 4096 (uniform routing) and
// at T = 127 with a skewed routing that leaves experts empty; the same for the
// schedule variants whose kernels no example's default schedule builds
// (bench/variants/tma-stores.moe: the TMA-store epilogue). Outputs are
// poisoned before each launch; a pass needs no NaN/unwritten element and a
// relative error within bf16 tolerance (runGemm in runtime/src/run.h).
#include "moejit/dsl.h"
#include "moejit/error.h"
#include "moejit/knobs.h"
#include "runtime/src/driver_info.h"
#include "runtime/src/run.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>

namespace moejit {
namespace {

namespace fs = std::filesystem;

struct Case {
  std::string example; // file stem
  fs::path file;
  int64_t tokens;
  std::string routing;
};

// Readable parameters in test listings instead of gtest's byte dump.
void PrintTo(const Case &c, std::ostream *os) {
  *os << c.example << " T=" << c.tokens << " " << c.routing;
}

std::vector<fs::path> examples() {
  std::vector<fs::path> files;
  const fs::path dir = fs::path(MOEJIT_SOURCE_DIR) / "examples";
  if (fs::exists(dir))
    for (const fs::directory_entry &entry : fs::directory_iterator(dir))
      if (entry.path().extension() == ".moe")
        files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  const fs::path tmaStores = fs::path(MOEJIT_SOURCE_DIR) / "bench" / "variants" / "tma-stores.moe";
  if (fs::exists(tmaStores))
    files.push_back(tmaStores);
  return files;
}

std::vector<Case> cases() {
  std::vector<Case> all;
  for (const fs::path &file : examples()) {
    for (int64_t tokens : {0, 1, 127, 4096})
      all.push_back({file.stem().string(), file, tokens, "uniform"});
    all.push_back({file.stem().string(), file, 127, "zipf:1.5"});
  }
  return all;
}

// One GPU and its compiled modules for the whole binary: opening the GPU
// and compiling each example once keeps the suite fast.
class GpuSession {
public:
  static GpuSession &get() {
    static GpuSession session;
    return session;
  }
  Gpu *gpu() { return gpu_ ? &*gpu_ : nullptr; }
  const std::string &whyNoGpu() const { return whyNoGpu_; }
  const Target &target() const { return target_; }

  struct Compiled {
    Spec spec;
    std::vector<CompiledLayer> layers;
    std::vector<Module> modules;
  };
  Compiled &compiled(const std::string &example, const fs::path &file) {
    auto it = compiled_.find(example);
    if (it != compiled_.end())
      return it->second;
    std::ifstream in(file);
    std::ostringstream text;
    text << in.rdbuf();
    Diagnostics diags(text.str());
    std::optional<Spec> spec = parseSpec(text.str(), file.string(), target_, diags);
    if (!spec)
      throw Error(file.string() + " does not parse:\n" + diags.render());
    Compiled entry{*spec, {}, {}};
    for (const LayerSpec &layer : entry.spec.layers) {
      entry.layers.push_back(compileLayer(layer, target_));
      entry.modules.push_back(Module::fromPtx(*gpu_, entry.layers.back().ptx));
    }
    return compiled_.emplace(example, std::move(entry)).first->second;
  }

private:
  GpuSession() {
    const Knobs knobs = Knobs::fromEnvironment();
    try {
      gpu_.emplace(knobs.cudaDriver);
      target_ = runTarget("", knobs);
    } catch (const Error &e) {
      whyNoGpu_ = e.what();
    }
  }
  std::optional<Gpu> gpu_;
  std::string whyNoGpu_;
  Target target_;
  std::map<std::string, Compiled> compiled_;
};

class GemmFamilies : public ::testing::TestWithParam<Case> {};

TEST_P(GemmFamilies, MatchReference) {
  GpuSession &session = GpuSession::get();
  if (!session.gpu())
    GTEST_SKIP() << "no GPU to run on: " << session.whyNoGpu();
  const Case &c = GetParam();
  GpuSession::Compiled &compiled = session.compiled(c.example, c.file);
  const RoutingMethod routing = RoutingMethod::parse(c.routing);
  for (size_t l = 0; l < compiled.spec.layers.size(); ++l) {
    const LayerSpec &layer = compiled.spec.layers[l];
    const GroupedRows rows = groupByExpert(
        route(routing, c.tokens, layer.experts, layer.router.topK, /*seed=*/c.tokens + 1));
    // With few experts (Mixtral's 8) every expert still gets tokens under a
    // skew; the layers with many experts are the ones that check empty ones.
    if (c.routing != "uniform" && c.tokens > 0 && layer.experts >= 32) {
      EXPECT_GT(std::count(rows.counts.begin(), rows.counts.end(), 0), 0)
          << "the skewed routing should leave experts empty";
    }
    const CompiledLayer &kernels = compiled.layers[l];
    for (size_t i = 0; i < kernels.problems.size(); ++i) {
      Function kernel = compiled.modules[l].function(kernels.kernelNames[i]);
      GemmRunSettings settings;
      settings.seed = 1000 + c.tokens;
      const GemmRunResult result = runGemm(*session.gpu(), kernel, layer, kernels.problems[i],
                                           session.target(), rows, settings);
      EXPECT_TRUE(result.passed) << layer.name << "/" << toString(kernels.problems[i].kind)
                                 << " T=" << c.tokens << " " << c.routing << ": " << result.failure;
      EXPECT_EQ(result.nonFiniteOutputs, 0);
    }
  }
}

std::string caseName(const ::testing::TestParamInfo<Case> &info) {
  std::string name =
      info.param.example + "_T" + std::to_string(info.param.tokens) + "_" + info.param.routing;
  for (char &ch : name)
    if (!std::isalnum(static_cast<unsigned char>(ch)))
      ch = '_';
  return name;
}

INSTANTIATE_TEST_SUITE_P(Examples, GemmFamilies, ::testing::ValuesIn(cases()), caseName);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(GemmFamilies);

} // namespace
} // namespace moejit
