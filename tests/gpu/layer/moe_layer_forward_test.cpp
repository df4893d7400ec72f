// GPU tier of MoeLayer::forward: every example's (first) layer at T in
// {1, 7, 4096} (and 32768 for qwen3-30b-a3b and sonicmoe-7b), with uniform
// and skewed router logits, with and without token rounding, against the
// float64 layer reference; the router-weights path (logits = X Wr) and
// keepH with a caller H buffer once per example. Skips without a GPU.
#include "moejit/dsl.h"
#include "moejit/error.h"
#include "moejit/knobs.h"
#include "runtime/layer/forward_job.h"
#include "runtime/layer/layer_forward_reference.h"
#include "runtime/src/driver_info.h"
#include "runtime/src/half.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <iostream>
#include <memory>
#include <numeric>
#include <optional>
#include <sstream>

namespace moejit {
namespace {

using namespace internal; // MoeLayer and its ForwardArgs

// Reference work per check: a sample of tokens above it.
constexpr int64_t kReferenceMacs = 1'500'000'000;
constexpr double kTolerance = 1e-2;

class GpuSession {
public:
  static GpuSession &get() {
    static GpuSession session;
    return session;
  }
  Gpu *gpu() { return gpu_ ? &*gpu_ : nullptr; }
  const std::string &whyNoGpu() const { return whyNoGpu_; }
  const Target &target() const { return target_; }
  KernelCache &cache() { return *cache_; }
  TemplateKernelCache &templates() { return *templates_; }

private:
  GpuSession() {
    try {
      const Knobs knobs = Knobs::fromEnvironment();
      gpu_.emplace(knobs.cudaDriver);
      target_ = runTarget("", knobs);
      cache_ = std::make_unique<KernelCache>(KernelCacheOptions::fromKnobs(knobs));
      templates_ =
          std::make_unique<TemplateKernelCache>(Nvrtc::load(nvrtcLibraryCandidates(knobs)));
    } catch (const Error &e) {
      if (e.kind() != ErrorKind::NoGpu)
        throw;
      whyNoGpu_ = e.what();
      gpu_.reset();
    }
  }
  std::optional<Gpu> gpu_;
  std::string whyNoGpu_;
  Target target_;
  std::unique_ptr<KernelCache> cache_;
  std::unique_ptr<TemplateKernelCache> templates_;
};

template <class T> DeviceBuffer upload(const Gpu &gpu, const std::vector<T> &host) {
  DeviceBuffer buffer = gpu.allocate(host.size() * sizeof(T));
  if (!host.empty())
    buffer.upload(std::span<const T>(host));
  return buffer;
}

LayerSpec firstLayer(const std::string &example, const Target &target) {
  const std::string path = std::string(MOEJIT_SOURCE_DIR) + "/examples/" + example + ".moe";
  std::ifstream in(path);
  std::ostringstream text;
  text << in.rdbuf();
  Diagnostics diags(text.str());
  std::optional<Spec> spec = parseSpec(text.str(), path, target, diags);
  if (!spec)
    throw std::runtime_error(diags.render());
  return spec->layers.front();
}

// One example's layer on the GPU with its weights uploaded once.
struct LoadedExample {
  LayerSpec layer;
  std::optional<MoeLayer> moe;
  LayerHostInputs inputs;
  DeviceBuffer w1, w2, routerWeights;
};

struct Outcome {
  Comparison check;
  int64_t nonFinite = 0;
  int64_t gpuRows = 0, referenceRows = 0;
  size_t checkedTokens = 0;
};

// Runs one forward on fresh X (and logits) and checks O.
Outcome runCase(LoadedExample &example, RouterSource source, int64_t tokens, bool rounding,
                bool callerH, uint64_t seed) {
  const Gpu &gpu = *GpuSession::get().gpu();
  const LayerSpec &layer = example.layer;
  randomTokens(example.inputs, layer, source, tokens, seed);
  DeviceBuffer x = upload(gpu, example.inputs.upProj.a);
  DeviceBuffer logits = upload(gpu, example.inputs.logits);
  DeviceBuffer out = gpu.allocate(tokens * layer.hidden * 2);
  out.fillBytes(0xFF);

  ForwardArgs args;
  args.x = x.pointer();
  args.routerWeights = source == RouterSource::Weights ? example.routerWeights.pointer() : 0;
  args.routerLogits = logits.pointer();
  args.w1 = example.w1.pointer();
  args.w2 = example.w2.pointer();
  args.out = out.pointer();
  args.tokens = tokens;
  args.options.tokenRounding = rounding;
  args.options.keepH = callerH;
  const RoutingKernels &kernels = example.moe->routingKernels(rounding);
  const ForwardWorkspaceLayout layout =
      forwardWorkspaceLayout(layer, kernels.config(), tokens, callerH, callerH);
  DeviceBuffer h = callerH ? gpu.allocate(layout.maxRows * layer.upColumns() * 2) : DeviceBuffer();
  args.h = h.pointer();
  DeviceBuffer workspace = gpu.allocate(std::max<size_t>(layout.bytes, 256));
  workspace.fillBytes(0xFF); // poison: nothing may read what was not written
  args.workspace = workspace.pointer();
  args.workspaceBytes = layout.bytes;

  Stream stream = gpu.createStream();
  const ForwardResult result = example.moe->forward(stream, args);
  stream.synchronize();
  std::vector<uint16_t> o(tokens * layer.hidden);
  out.download(std::span(o));

  std::vector<float> usedLogits = example.inputs.logits;
  if (source == RouterSource::Weights) {
    usedLogits.resize(tokens * layer.experts);
    gpu.driver().call(gpu.driver().cuMemcpyDtoH, usedLogits.data(), result.routing.logits,
                      usedLogits.size() * sizeof(float));
  }
  const GroupedRows rows = referenceRouting(usedLogits, kernels.config(), tokens);
  Outcome outcome;
  const std::vector<int32_t> counts = kernels.downloadCounts(stream, result.routing);
  outcome.gpuRows = std::accumulate(counts.begin(), counts.end(), int64_t{0});
  outcome.referenceRows = rows.rows();
  const std::vector<int64_t> checked = sampleTokens(layer, rows, kReferenceMacs, seed);
  outcome.checkedTokens = checked.size();
  const LayerForwardReference reference =
      referenceLayerForward(layer, rows, example.inputs, checked);
  outcome.check = compareForward(reference, o, layer.dtype, layer.hidden);
  outcome.nonFinite = std::count_if(
      o.begin(), o.end(), [&](uint16_t bits) { return isNonFiniteHalf(layer.dtype, bits); });
  return outcome;
}

struct Example {
  std::string name;
  bool large; // also T = 32768
};

class MoeLayerForwardGpu : public testing::TestWithParam<Example> {
protected:
  void SetUp() override {
    if (!GpuSession::get().gpu())
      GTEST_SKIP() << "no GPU: " << GpuSession::get().whyNoGpu();
  }
};

TEST_P(MoeLayerForwardGpu, MatchesTheFloat64Reference) {
  GpuSession &session = GpuSession::get();
  const Gpu &gpu = *session.gpu();
  LoadedExample example;
  example.layer = firstLayer(GetParam().name, session.target());
  example.moe.emplace(loadMoeLayer(gpu, session.cache(), session.templates(), example.layer,
                                   session.target(), true));
  example.inputs = randomLayerWeights(example.layer, RouterSource::Weights, 11);
  example.w1 = upload(gpu, example.inputs.upProj.b);
  example.w2 = upload(gpu, example.inputs.downProj.b);
  example.routerWeights = upload(gpu, example.inputs.routerWeights);

  std::vector<int64_t> tokenCounts = {1, 7, 4096};
  if (GetParam().large)
    tokenCounts.push_back(32768);
  uint64_t seed = 100;
  for (int64_t tokens : tokenCounts)
    for (RouterSource source : {RouterSource::UniformLogits, RouterSource::SkewedLogits})
      for (bool rounding : {false, true}) {
        SCOPED_TRACE(testing::Message()
                     << "T " << tokens
                     << (source == RouterSource::SkewedLogits ? " skewed" : " uniform")
                     << (rounding ? " rounding" : " top-K"));
        const Outcome outcome = runCase(example, source, tokens, rounding, false, ++seed);
        EXPECT_EQ(outcome.nonFinite, 0);
        EXPECT_LE(outcome.check.relativeError, kTolerance)
            << "over " << outcome.checkedTokens << " tokens";
        EXPECT_EQ(outcome.gpuRows, outcome.referenceRows);
        if (!rounding)
          EXPECT_EQ(outcome.gpuRows, tokens * example.layer.router.topK);
        std::cout << "  " << GetParam().name << " T=" << tokens
                  << (source == RouterSource::SkewedLogits ? " skewed " : " uniform ")
                  << (rounding ? "rounding" : "top-K") << ": R=" << outcome.gpuRows << " rel err "
                  << outcome.check.relativeError << " (" << outcome.checkedTokens << " tokens)"
                  << std::endl;
      }

  // logits = X Wr on the GPU, and H kept in a caller buffer.
  for (bool callerH : {false, true}) {
    SCOPED_TRACE(callerH ? "router weights, rounding, caller H" : "router weights");
    const Outcome outcome = runCase(example, RouterSource::Weights, 4096, callerH, callerH, 7);
    EXPECT_EQ(outcome.nonFinite, 0);
    EXPECT_LE(outcome.check.relativeError, kTolerance);
    EXPECT_EQ(outcome.gpuRows, outcome.referenceRows);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Examples, MoeLayerForwardGpu,
    testing::Values(Example{"qwen3-30b-a3b", true}, Example{"sonicmoe-7b", true},
                    Example{"olmoe-1b-7b", false}, Example{"mixtral-8x7b", false},
                    Example{"gpt-oss-20b", false}, Example{"deepseek-v3", false}),
    [](const testing::TestParamInfo<Example> &info) {
      std::string name = info.param.name;
      std::replace(name.begin(), name.end(), '-', '_');
      return name;
    });

// Bad input on a real layer gets an error before anything is enqueued.
TEST(MoeLayerForwardGpuErrors, RejectsBadArguments) {
  GpuSession &session = GpuSession::get();
  if (!session.gpu())
    GTEST_SKIP() << "no GPU: " << session.whyNoGpu();
  const LayerSpec layer = firstLayer("olmoe-1b-7b", session.target());
  const MoeLayer moe = loadMoeLayer(*session.gpu(), session.cache(), session.templates(), layer,
                                    session.target(), false);
  Stream stream = session.gpu()->createStream();
  ForwardArgs args;
  args.tokens = 16;
  args.x = args.w1 = args.w2 = args.out = args.routerLogits = 0x100000;
  args.workspace = 0x200000;
  args.workspaceBytes = moe.workspaceBytes(16) - 1;
  EXPECT_THROW(moe.forward(stream, args), Error);
  args.workspaceBytes += 1;
  args.options.tokenRounding = true; // its kernels were not built
  EXPECT_THROW(moe.forward(stream, args), Error);
}

} // namespace
} // namespace moejit
