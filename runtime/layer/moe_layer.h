// The MoE layer forward on one GPU: router -> (token rounding) -> permutation
// metadata -> up-projection (gathered rows, activation epilogue) ->
// down-projection (score-scaling epilogue) -> aggregation, all enqueued on
// the caller's stream inside a caller-given workspace. Internal, in
// moejit::internal: the public moejit::MoeLayer (moejit/moejit.h) wraps it.
#pragma once

#include "moejit/problem.h"
#include "moejit/spec.h"
#include "runtime/layer/layer_kernels.h"
#include "runtime/src/device.h"
#include "runtime/src/module.h"
#include "templates/template_compiler.h"

#include <cstddef>
#include <cstdint>
#include <memory>

namespace moejit::internal {

// A compiled grouped GEMM ready to launch: its problem (for the launch
// shape) and its kernel, which keeps `module` loaded.
struct GroupedGemmKernel {
  GemmProblem problem;
  std::shared_ptr<const Module> module;
  Function function;
};

struct ForwardOptions {
  // Tile-aware token rounding with the spec's mode (nearest when the spec
  // says none). Off: plain top-K, the default for inference.
  bool tokenRounding = false;
  // Keep H [rows][u] for a later backward, in `ForwardArgs::h` when given,
  // else in the workspace (where the down-projection's output would
  // otherwise reuse its space).
  bool keepH = false;
};

// Device pointers of one forward call. Matrices are row-major, in the
// layer's dtype unless said otherwise, and 16-byte aligned.
struct ForwardArgs {
  CUdeviceptr x = 0;             // X [T][d]
  CUdeviceptr routerWeights = 0; // Wr [d][E]: logits = X Wr ...
  CUdeviceptr routerLogits = 0;  // ... or the caller's fp32 logits [T][E] (exactly one of the two)
  CUdeviceptr w1 = 0;            // [E][d][u], u = 2n for gated activations, else n
  CUdeviceptr w2 = 0;            // [E][n][d]
  CUdeviceptr out = 0;           // O [T][d]
  int64_t tokens = 0;            // T
  CUdeviceptr workspace = 0;     // 256-byte aligned
  size_t workspaceBytes = 0;     // at least MoeLayer::workspaceBytes(T, options)
  CUdeviceptr h = 0;             // optional: H [maxGroupedRows][u] when keepH
  ForwardOptions options;
};

// Byte offsets of a forward's workspace: the routing buffers first, then H
// (when it has room there), act(H) and Y, each 256-byte aligned. A pure function of the layer, the
// routing config and T.
struct ForwardWorkspaceLayout {
  RoutingWorkspaceLayout routing; // at offset 0
  int64_t maxRows = 0;            // grouped rows the GEMMs are launched for
  // H is in the workspace when kept there (keepH without a caller buffer)
  // or when it is act (activation none); without keepH it is not written.
  bool hInWorkspace = true;
  size_t h = 0;   // H [maxRows][u] (when hInWorkspace)
  size_t act = 0; // act(H) [maxRows][n]; equals h for activation none (act = H)
  size_t y = 0;   // Y [maxRows][d]
  size_t bytes = 0;
};
ForwardWorkspaceLayout forwardWorkspaceLayout(const LayerSpec &layer,
                                              const RoutingKernelsConfig &routing, int64_t tokens,
                                              bool keepH, bool callerH);

// The routing config of a forward: plain top-K, or with token rounding to
// the spec's tile (the up-projection's M tile when the spec says 0).
RoutingKernelsConfig forwardRoutingConfig(const LayerSpec &layer, bool tokenRounding);

// Throws Error naming the first bad argument: null or misaligned pointers,
// both or neither router input, T < 0 or T*K (or the rounded rows) over
// int32, a workspace too small or misaligned. Needs no GPU.
void validateForwardArgs(const LayerSpec &layer, const RoutingKernelsConfig &routing,
                         const ForwardArgs &args);

// The stages of a forward, in order, for timing.
enum class ForwardStage { Routing, UpProj, DownProj, Aggregation };

// Told after each stage is enqueued (a timing harness records events here).
class ForwardProbe {
public:
  virtual ~ForwardProbe() = default;
  virtual void stageEnqueued(ForwardStage stage) = 0;
};

// Where a forward left its intermediates; valid until the workspace (and
// `ForwardArgs::h`) is reused.
struct ForwardResult {
  RoutingBuffers routing; // offsets[E] on the GPU is the row total R
  // h is 0 when H was not written (no keepH and an activation: the
  // up-projection then writes act(H) only).
  CUdeviceptr h = 0, act = 0, y = 0;
  int64_t maxRows = 0;
};

class MoeLayer {
public:
  // `upProj` and `downProj` are the layer's compiled GEMMs for `target`;
  // `topK` routes with plain top-K, `rounded` (may be null: rounding is then
  // refused) with the config of forwardRoutingConfig(layer, true).
  MoeLayer(const LayerSpec &layer, const Target &target, GroupedGemmKernel upProj,
           GroupedGemmKernel downProj, std::shared_ptr<const RoutingKernels> topK,
           std::shared_ptr<const RoutingKernels> rounded);

  const LayerSpec &layer() const { return layer_; }
  const RoutingKernels &routingKernels(bool tokenRounding) const;
  const GroupedGemmKernel &gemm(GemmKind kind) const;

  size_t workspaceBytes(int64_t tokens, const ForwardOptions &options = {}) const;

  // Validates `args`, then enqueues the whole forward on `stream` and
  // returns without waiting: no allocation and no host round trip. With
  // rounding the row total exists only on the GPU, so the GEMMs are launched
  // for maxGroupedRows; the kernels take their expert and row range from the
  // offsets and exit their surplus CTAs (docs/layer.md).
  ForwardResult forward(const Stream &stream, const ForwardArgs &args,
                        ForwardProbe *probe = nullptr) const;

private:
  LayerSpec layer_;
  Target target_;
  // Mutable because launchKernel takes the Function to raise its shared
  // memory limit; the constructor raises it once, so launches change nothing.
  mutable GroupedGemmKernel upProj_, downProj_;
  WeightMapCache upMap_, downMap_;
  std::shared_ptr<const RoutingKernels> topK_, rounded_;
};

// Throws Error unless the layer has the up_proj and down_proj a forward needs.
void requireForwardGemms(const LayerSpec &layer);

// The MoeLayer over the layer's compiled GEMMs, with its routing kernels
// compiled through `templates` and loaded on `gpu` (plain top-K, and rounded
// when `withRounding`). The one construction path of `moejit run --forward`
// (loadMoeLayer) and the public Runtime::layer.
MoeLayer makeMoeLayer(const Gpu &gpu, TemplateKernelCache &templates, const LayerSpec &layer,
                      const Target &target, GroupedGemmKernel upProj, GroupedGemmKernel downProj,
                      bool withRounding);

} // namespace moejit::internal
