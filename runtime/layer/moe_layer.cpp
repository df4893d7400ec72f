#include "runtime/layer/moe_layer.h"

#include "moejit/error.h"

#include <fmt/format.h>

#include <algorithm>
#include <limits>

namespace moejit::internal {
namespace {

constexpr size_t kWorkspaceAlignment = 256; // what RoutingKernels::route asks for
constexpr CUdeviceptr kMatrixAlignment = 16;

size_t alignUp(size_t bytes) {
  return (bytes + kWorkspaceAlignment - 1) / kWorkspaceAlignment * kWorkspaceAlignment;
}

void requirePointer(CUdeviceptr pointer, const char *name) {
  if (pointer == 0)
    throw Error(fmt::format("MoeLayer::forward: {} is null", name));
  if (pointer % kMatrixAlignment != 0)
    throw Error(
        fmt::format("MoeLayer::forward: {} (0x{:x}) must be 16-byte aligned", name, pointer));
}

void checkGemm(const GroupedGemmKernel &gemm, GemmKind kind, const LayerSpec &layer) {
  if (gemm.problem.kind != kind)
    throw Error(fmt::format("MoeLayer of '{}': the {} kernel given was compiled for {}", layer.name,
                            toString(kind), toString(gemm.problem.kind)));
  if (gemm.problem.experts != layer.experts || gemm.problem.dtype != layer.dtype)
    throw Error(fmt::format("MoeLayer of '{}': the {} kernel was compiled for another layer",
                            layer.name, toString(kind)));
}

} // namespace

void requireForwardGemms(const LayerSpec &layer) {
  for (GemmKind kind : {GemmKind::UpProj, GemmKind::DownProj})
    if (!layer.gemm(kind))
      throw Error(fmt::format("layer '{}' has no {} GEMM: the forward needs up_proj and down_proj",
                              layer.name, toString(kind)));
}

RoutingKernelsConfig forwardRoutingConfig(const LayerSpec &layer, bool tokenRounding) {
  requireForwardGemms(layer);
  const GemmSpec *up = layer.gemm(GemmKind::UpProj);
  RoutingKernelsConfig config = RoutingKernelsConfig::fromLayer(layer, up->schedule.tile.m);
  if (!tokenRounding) {
    config.rounding = RoundingMode::None;
    config.roundingTile = 0;
  } else if (config.rounding == RoundingMode::None) {
    // Asked for rounding on a spec that names no mode: the rule's default.
    config.rounding = RoundingMode::Nearest;
    config.roundingTile = layer.rounding.tile > 0 ? layer.rounding.tile : up->schedule.tile.m;
  }
  return config;
}

ForwardWorkspaceLayout forwardWorkspaceLayout(const LayerSpec &layer,
                                              const RoutingKernelsConfig &routing, int64_t tokens,
                                              bool keepH, bool callerH) {
  ForwardWorkspaceLayout layout;
  layout.routing = routingWorkspaceLayout(routing, tokens);
  layout.maxRows = layout.routing.maxRows;
  const size_t element = static_cast<size_t>(dtypeBytes(layer.dtype));
  const size_t rows = static_cast<size_t>(layout.maxRows);
  const size_t hBytes = alignUp(rows * static_cast<size_t>(layer.upColumns()) * element);
  const size_t actBytes = alignUp(rows * static_cast<size_t>(layer.intermediate) * element);
  const size_t yBytes = alignUp(rows * static_cast<size_t>(layer.hidden) * element);
  const bool hasAct = layer.activation != Activation::None;
  // H has room in the workspace only when it is kept there, or when it is
  // act itself (activation none). Otherwise the up-projection writes act(H)
  // only (forward passes C = null), so H needs no space at all: for a layer
  // whose H is wider than Y (Mixtral: 28672 vs 4096 columns) that is most
  // of the workspace.
  layout.hInWorkspace = keepH ? !callerH : !hasAct;
  size_t next = layout.routing.bytes;
  auto take = [&](size_t bytes) {
    const size_t offset = next;
    next += bytes;
    return offset;
  };
  if (layout.hInWorkspace) {
    // With activation none, act = H is read while Y is written: no reuse.
    layout.h = take(hBytes);
    layout.act = hasAct ? take(actBytes) : layout.h;
    layout.y = take(yBytes);
  } else {
    layout.act = hasAct ? take(actBytes) : 0; // act = H, in the caller's buffer
    layout.y = take(yBytes);
  }
  layout.bytes = next;
  return layout;
}

void validateForwardArgs(const LayerSpec &layer, const RoutingKernelsConfig &routing,
                         const ForwardArgs &args) {
  if (args.tokens < 0)
    throw Error(fmt::format("MoeLayer::forward: T = {} must be 0 or more", args.tokens));
  constexpr int64_t kIndexLimit = std::numeric_limits<int32_t>::max();
  if (args.tokens > kIndexLimit / routing.topK)
    throw Error(fmt::format("MoeLayer::forward: T = {} with K = {} gives more than 2^31-1 "
                            "grouped rows; split the batch",
                            args.tokens, routing.topK));
  // routingWorkspaceLayout checks the rounded rows and the router's limits.
  const ForwardWorkspaceLayout layout =
      forwardWorkspaceLayout(layer, routing, args.tokens, args.options.keepH, args.h != 0);
  if (args.tokens == 0)
    return;
  requirePointer(args.x, "X");
  requirePointer(args.w1, "W1");
  requirePointer(args.w2, "W2");
  requirePointer(args.out, "O");
  if ((args.routerWeights != 0) == (args.routerLogits != 0))
    throw Error("MoeLayer::forward: give exactly one of the router weights (d x E) and the "
                "router logits (T x E fp32)");
  requirePointer(args.routerWeights != 0 ? args.routerWeights : args.routerLogits,
                 args.routerWeights != 0 ? "the router weights" : "the router logits");
  if (args.h != 0 && !args.options.keepH)
    throw Error("MoeLayer::forward: an H buffer was given without options.keepH");
  if (args.h != 0)
    requirePointer(args.h, "H");
  if (args.workspace == 0)
    throw Error("MoeLayer::forward: the workspace is null");
  if (args.workspace % kWorkspaceAlignment != 0)
    throw Error(fmt::format("MoeLayer::forward: the workspace (0x{:x}) must be 256-byte aligned",
                            args.workspace));
  if (args.workspaceBytes < layout.bytes)
    throw Error(fmt::format("MoeLayer::forward: the workspace holds {} bytes; T = {}{} needs {} "
                            "(MoeLayer::workspaceBytes)",
                            args.workspaceBytes, args.tokens,
                            routing.rounds() ? " with token rounding" : "", layout.bytes));
}

MoeLayer::MoeLayer(const LayerSpec &layer, const Target &target, GroupedGemmKernel upProj,
                   GroupedGemmKernel downProj, std::shared_ptr<const RoutingKernels> topK,
                   std::shared_ptr<const RoutingKernels> rounded)
    : layer_(layer), target_(target), upProj_(std::move(upProj)), downProj_(std::move(downProj)),
      topK_(std::move(topK)), rounded_(std::move(rounded)) {
  checkGemm(upProj_, GemmKind::UpProj, layer_);
  checkGemm(downProj_, GemmKind::DownProj, layer_);
  if (!topK_)
    throw Error("MoeLayer: the plain top-K routing kernels are missing");
  if (topK_->config().rounds() || (rounded_ && !rounded_->config().rounds()))
    throw Error("MoeLayer: routing kernels swapped (plain top-K and rounded)");
  // The shared memory of a launch does not depend on the rows: raise the
  // limit now so that forward() never changes a Function.
  for (GroupedGemmKernel *gemm : {&upProj_, &downProj_})
    gemm->function.reserveDynamicShared(launchShape(gemm->problem, 0, target_).sharedBytes);
}

const RoutingKernels &MoeLayer::routingKernels(bool tokenRounding) const {
  if (!tokenRounding)
    return *topK_;
  if (!rounded_)
    throw Error(fmt::format("MoeLayer of '{}': token rounding was asked for but its kernels "
                            "were not built",
                            layer_.name));
  return *rounded_;
}

const GroupedGemmKernel &MoeLayer::gemm(GemmKind kind) const {
  if (kind == GemmKind::UpProj)
    return upProj_;
  if (kind == GemmKind::DownProj)
    return downProj_;
  throw Error(fmt::format("MoeLayer: no {} kernel in a forward", toString(kind)));
}

size_t MoeLayer::workspaceBytes(int64_t tokens, const ForwardOptions &options) const {
  return forwardWorkspaceLayout(layer_, routingKernels(options.tokenRounding).config(), tokens,
                                options.keepH, false)
      .bytes;
}

ForwardResult MoeLayer::forward(const Stream &stream, const ForwardArgs &args,
                                ForwardProbe *probe) const {
  const RoutingKernels &kernels = routingKernels(args.options.tokenRounding);
  validateForwardArgs(layer_, kernels.config(), args);
  const ForwardWorkspaceLayout layout = forwardWorkspaceLayout(
      layer_, kernels.config(), args.tokens, args.options.keepH, args.h != 0);
  ForwardResult result;
  result.maxRows = layout.maxRows;
  if (args.tokens == 0)
    return result;
  auto stageEnqueued = [&](ForwardStage stage) {
    if (probe)
      probe->stageEnqueued(stage);
  };

  RouterInput router;
  if (args.routerLogits != 0) {
    router.logits = args.routerLogits;
  } else {
    router.x = args.x;
    router.weights = args.routerWeights;
    router.hidden = layer_.hidden;
  }
  result.routing = kernels.route(stream, router, args.tokens, args.workspace, layout.routing.bytes);
  stageEnqueued(ForwardStage::Routing);

  result.h = layout.hInWorkspace ? args.workspace + layout.h : args.h;
  result.act = layer_.activation == Activation::None ? result.h : args.workspace + layout.act;
  result.y = args.workspace + layout.y;
  // The row total is offsets[E] on the GPU. total_rows sizes the grid
  // (launchShape) and the rows of the TMA maps of A and the outputs: the
  // kernels find each CTA's expert and rows from the offsets and exit the
  // CTAs past the last tile, and maxRows (at least offsets[E]) keeps every
  // map covering the rows the kernels touch, so maxRows is safe.
  const auto rows = static_cast<int32_t>(layout.maxRows);
  const RoutingBuffers &routing = result.routing;

  KernelArgs up;
  up.a = args.x;
  up.b = args.w1;
  // Without keepH nothing reads H (the down-projection reads act(H)), so
  // the up-projection writes act(H) only (result.h is 0: H has no room): a
  // third of its output bytes for a gated activation. With activation none,
  // act(H) is H itself.
  const bool hasAct = layer_.activation != Activation::None;
  up.c = result.h;
  up.auxOut = hasAct ? result.act : 0;
  up.offsets = routing.offsets;
  up.gather = routing.gather;
  up.scale = routing.scale;
  up.totalRows = rows;
  upMap_.set(upProj_.function.driver(), upProj_.problem, target_, up);
  setLaunchMaps(upProj_.function.driver(), upProj_.problem, target_, up);
  launchKernel(upProj_.function, launchShape(upProj_.problem, layout.maxRows, target_), up, stream);
  stageEnqueued(ForwardStage::UpProj);

  KernelArgs down;
  down.a = result.act;
  down.b = args.w2;
  down.c = result.y;
  down.offsets = routing.offsets;
  down.gather = routing.gather;
  down.scale = routing.scale;
  down.totalRows = rows;
  downMap_.set(downProj_.function.driver(), downProj_.problem, target_, down);
  setLaunchMaps(downProj_.function.driver(), downProj_.problem, target_, down);
  launchKernel(downProj_.function, launchShape(downProj_.problem, layout.maxRows, target_), down,
               stream);
  stageEnqueued(ForwardStage::DownProj);

  // The down-projection already scaled each row by its score.
  kernels.aggregate(stream, routing, result.y, args.out, layer_.hidden, false);
  stageEnqueued(ForwardStage::Aggregation);
  return result;
}

MoeLayer makeMoeLayer(const Gpu &gpu, TemplateKernelCache &templates, const LayerSpec &layer,
                      const Target &target, GroupedGemmKernel upProj, GroupedGemmKernel downProj,
                      bool withRounding) {
  auto topK =
      std::make_shared<const RoutingKernels>(gpu, templates, forwardRoutingConfig(layer, false));
  std::shared_ptr<const RoutingKernels> rounded;
  if (withRounding)
    rounded =
        std::make_shared<const RoutingKernels>(gpu, templates, forwardRoutingConfig(layer, true));
  MoeLayer moe(layer, target, std::move(upProj), std::move(downProj), std::move(topK),
               std::move(rounded));
  // The first H100 run failed its first cuCtxSynchronize after this point
  // with CUDA_ERROR_CONTEXT_IS_DESTROYED (cause not yet known, docs/layer.md);
  // making the GPU's context current again is harmless and may be the fix.
  gpu.makeCurrent();
  return moe;
}

} // namespace moejit::internal
