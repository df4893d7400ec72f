// GPU tier of the public layer forward (moejit::MoeLayer): the forward of a
// small layer through Runtime::layer, with caller-given logits, plain top-K
// and with token rounding, against the internal float64 reference; then its
// argument checks. Skips without a GPU.
#include "moejit/moejit.h"

#include "runtime/layer/layer_forward_reference.h"
#include "runtime/layer/moe_layer.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace moejit {
namespace {

constexpr const char *kLayer = "layer layer_api {\n"
                               "  experts = 8\n"
                               "  hidden = 256\n"
                               "  intermediate = 128\n"
                               "  router { top_k = 2 }\n"
                               "  gemm up_proj {}\n"
                               "  gemm down_proj {}\n"
                               "}\n";

template <class T> DeviceMemory upload(const Runtime &runtime, const std::vector<T> &host) {
  DeviceMemory memory = runtime.allocate(host.size() * sizeof(T));
  memory.upload(host.data(), host.size() * sizeof(T));
  return memory;
}

std::string messageOf(const std::function<void()> &call) {
  try {
    call();
  } catch (const Error &e) {
    return e.what();
  }
  ADD_FAILURE() << "no moejit::Error thrown";
  return {};
}

class LayerApi : public ::testing::Test {
protected:
  void SetUp() override {
    RuntimeOptions options;
    options.cacheDir = ""; // memory only
    runtime_.emplace(options);
    if (!runtime_->hasGpu())
      GTEST_SKIP() << "no GPU: the public layer forward is checked on a GPU host";
    spec_ = runtime_->parseSpec(kLayer);
  }

  std::optional<Runtime> runtime_;
  Spec spec_;
};

TEST_F(LayerApi, ForwardMatchesTheReference) {
  const LayerSpec &layer = spec_.layers[0];
  const MoeLayer moe = runtime_->layer(layer, /*withRounding=*/true);
  EXPECT_EQ(moe.layerName(), "layer_api");
  const int64_t T = 127;
  const int d = layer.hidden;
  for (bool rounding : {false, true}) {
    SCOPED_TRACE(rounding ? "token rounding" : "plain top-K");
    LayerHostInputs inputs = randomLayerWeights(layer, RouterSource::UniformLogits, 5);
    randomTokens(inputs, layer, RouterSource::UniformLogits, T, 5);
    const DeviceMemory x = upload(*runtime_, inputs.upProj.a);
    const DeviceMemory w1 = upload(*runtime_, inputs.upProj.b);
    const DeviceMemory w2 = upload(*runtime_, inputs.downProj.b);
    const DeviceMemory logits = upload(*runtime_, inputs.logits);
    DeviceMemory out = runtime_->allocate(T * d * sizeof(uint16_t));
    out.fill(0xFF); // NaN: every element must be written

    ForwardArgs args;
    args.x = x.data();
    args.routerLogits = static_cast<const float *>(logits.data());
    args.w1 = w1.data();
    args.w2 = w2.data();
    args.out = out.data();
    args.tokens = T;
    args.options.tokenRounding = rounding;
    DeviceMemory workspace = runtime_->allocate(moe.workspaceBytes(T, args.options));
    args.workspace = workspace.data();
    args.workspaceBytes = workspace.bytes();
    const CudaStream stream = runtime_->createStream();
    moe.forward(args, stream.handle());
    stream.synchronize();
    std::vector<uint16_t> o(T * d);
    out.download(o.data(), o.size() * sizeof(uint16_t));

    const GroupedRows rows =
        referenceRouting(inputs.logits, internal::forwardRoutingConfig(layer, rounding), T);
    std::vector<int64_t> tokens(T);
    for (int64_t t = 0; t < T; ++t)
      tokens[t] = t;
    const LayerForwardReference reference = referenceLayerForward(layer, rows, inputs, tokens);
    const Comparison check = compareForward(reference, o, layer.dtype, d);
    EXPECT_EQ(check.nonFinite, 0);
    EXPECT_LE(check.relativeError, 1e-2);
  }
}

TEST_F(LayerApi, RepeatedRequestsShareOneModule) {
  const LayerSpec &layer = spec_.layers[0];
  const MoeLayer first = runtime_->layer(layer);
  const uint64_t loaded = runtime_->stats().modulesLoaded;
  const MoeLayer second = runtime_->layer(layer);
  EXPECT_EQ(runtime_->stats().modulesLoaded, loaded);
  // The kernels of a layer with only up_proj and down_proj are the same module.
  runtime_->kernels(layer);
  EXPECT_EQ(runtime_->stats().modulesLoaded, loaded);
}

TEST_F(LayerApi, ForwardChecksItsArguments) {
  const MoeLayer moe = runtime_->layer(spec_.layers[0]);
  const int64_t T = 16;
  DeviceMemory buffer = runtime_->allocate(1 << 20);
  DeviceMemory workspace = runtime_->allocate(moe.workspaceBytes(T));
  char *base = static_cast<char *>(buffer.data());
  ForwardArgs args;
  args.x = base;
  args.w1 = base;
  args.w2 = base;
  args.out = base;
  args.tokens = T;
  args.workspace = workspace.data();
  args.workspaceBytes = workspace.bytes();

  EXPECT_NE(messageOf([&] { moe.forward(args, nullptr); }).find("exactly one of the router"),
            std::string::npos);
  args.routerLogits = reinterpret_cast<const float *>(base);
  args.routerWeights = base;
  EXPECT_NE(messageOf([&] { moe.forward(args, nullptr); }).find("exactly one of the router"),
            std::string::npos);
  args.routerWeights = nullptr;
  args.x = nullptr;
  EXPECT_NE(messageOf([&] { moe.forward(args, nullptr); }).find("X is null"), std::string::npos);
  args.x = base + 8;
  EXPECT_NE(messageOf([&] { moe.forward(args, nullptr); }).find("16-byte aligned"),
            std::string::npos);
  args.x = base;
  args.workspaceBytes = 256;
  EXPECT_NE(messageOf([&] { moe.forward(args, nullptr); }).find("workspaceBytes"),
            std::string::npos);
  args.workspaceBytes = workspace.bytes();
  args.h = base;
  EXPECT_NE(messageOf([&] { moe.forward(args, nullptr); }).find("without options.keepH"),
            std::string::npos);
  args.h = nullptr;
  args.tokens = -1;
  EXPECT_NE(messageOf([&] { moe.forward(args, nullptr); }).find("must be 0 or more"),
            std::string::npos);
  EXPECT_NE(messageOf([&] { moe.workspaceBytes(-1); }).find("must be 0 or more"),
            std::string::npos);
  ForwardOptions rounding;
  rounding.tokenRounding = true;
  EXPECT_NE(messageOf([&] { moe.workspaceBytes(T, rounding); }).find("token rounding"),
            std::string::npos);
}

} // namespace
} // namespace moejit
