// The small memory-bound kernels around the grouped GEMMs of an MoE layer
// forward, from the NVRTC templates in templates/moejit/layer: router
// (logits, scores, top-K), token rounding, permutation metadata and
// aggregation. Everything runs on a caller's stream inside a caller-given
// workspace: no allocation and no host round trip once compiled.
#pragma once

#include "moejit/spec.h"
#include "runtime/src/device.h"
#include "runtime/src/module.h"
#include "templates/template_compiler.h"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace moejit {

// What the compiled kernels depend on (the rest, T and d, are run-time).
struct RoutingKernelsConfig {
  DType dtype = DType::BF16;
  int experts = 0; // E, 1..1024
  int topK = 0;    // K, 1..min(E, 32)
  ScoreFunc scores = ScoreFunc::Softmax;
  bool renormalize = true;
  RoundingMode rounding = RoundingMode::None;
  int roundingTile = 0; // the M tile tokens are rounded to (> 0 when rounding)

  // From a resolved layer; `upProjTileM` is used when the spec's rounding
  // tile is 0 ("the up-projection's M tile").
  static RoutingKernelsConfig fromLayer(const LayerSpec &layer, int upProjTileM);
  // Throws Error saying which field is out of range.
  void validate() const;
  bool rounds() const { return rounding != RoundingMode::None; }
};

// The kernels of a config, in the order of layerKernelNameExpressions.
enum class LayerKernel {
  RouterLogits,
  RouterTopK,
  CountExpertChunks,
  ScanExpertChunks,
  ExclusiveScan,
  RoundedExpertOffsets, // only with rounding
  ScatterExpertRows,
  RoundExpertRows, // only with rounding
  CountTokenRows,
  FillTokenRows,
  SortTokenRows,
  Aggregate,
  AggregateScaled,
  Count
};

// The template instantiation of each kernel as an NVRTC name expression
// (one per LayerKernel; empty for kernels the config does not use).
std::vector<std::string> layerKernelNameExpressions(const RoutingKernelsConfig &config);
// The NVRTC program of a config for `arch` (sm_XY: cubin, compute_XY: PTX);
// only the used kernels are named.
TemplateProgram layerKernelProgram(const RoutingKernelsConfig &config, const std::string &arch);
// The arch the layer kernels are compiled for on a GPU of compute
// capability `computeCapability` (e.g. 90: "sm_90", a cubin).
std::string routingKernelArch(int computeCapability);

// Grouped rows: at most T*K, or with rounding up to E*(tile-1) more (each
// expert's rounded count is at most min(T, count + tile - 1)).
int64_t maxGroupedRows(const RoutingKernelsConfig &config, int64_t tokens);

// Device pointers of one routing, all inside the workspace (except logits
// given by the caller). Int32 unless said otherwise.
struct RoutingBuffers {
  int64_t tokens = 0;
  int64_t maxRows = 0;
  CUdeviceptr logits = 0;         // [T][E] float
  CUdeviceptr topkIds = 0;        // [T][K]
  CUdeviceptr topkScores = 0;     // [T][K] float, renormalised when asked
  CUdeviceptr scoresByExpert = 0; // [E][T] float raw scores, sign bit = chosen (rounding only)
  CUdeviceptr chunkCounts = 0;    // [chunks][E] scratch
  // The rows of plain top-K.
  CUdeviceptr topkCounts = 0, topkOffsets = 0, topkGather = 0, topkScale = 0;
  // The rows the grouped GEMMs read (docs/kernel-abi.md): the top-K ones, or
  // the rounded ones. counts [E], offsets [E+1], gather [maxRows], scale
  // [maxRows] float; offsets[E] is the row total.
  CUdeviceptr counts = 0, offsets = 0, gather = 0, scale = 0;
  // The inverse map: token t's rows are tokenRows[tokenOffsets[t] ..
  // tokenOffsets[t+1]), ascending.
  CUdeviceptr tokenCounts = 0;  // [T] scratch
  CUdeviceptr tokenOffsets = 0; // [T+1]
  CUdeviceptr tokenRows = 0;    // [maxRows]
};

// Byte offsets of every buffer in the workspace (256-byte aligned); a pure
// function of the config and T.
struct RoutingWorkspaceLayout {
  size_t bytes = 0;
  int chunks = 0; // token chunks of the expert histogram
  RoutingBuffers at(CUdeviceptr base, int64_t tokens) const;

  int64_t maxRows = 0;
  size_t logits = 0, topkIds = 0, topkScores = 0, scoresByExpert = 0, chunkCounts = 0;
  size_t topkCounts = 0, topkOffsets = 0, topkGather = 0, topkScale = 0;
  size_t counts = 0, offsets = 0, gather = 0, scale = 0;
  size_t tokenCounts = 0, tokenOffsets = 0, tokenRows = 0;
};
// Throws Error when T or the rows exceed the kernels' 32-bit indices.
RoutingWorkspaceLayout routingWorkspaceLayout(const RoutingKernelsConfig &config, int64_t tokens);

// The router's input: X [T][d] and Wr [d][E] in the dtype (logits = X Wr),
// or caller-given fp32 logits [T][E] (then x and weights stay 0).
struct RouterInput {
  CUdeviceptr x = 0, weights = 0;
  int hidden = 0;
  CUdeviceptr logits = 0;
};

class RoutingKernels {
public:
  // Compiles (or finds in `cache`) the kernels for the GPU's architecture
  // and loads them.
  RoutingKernels(const Gpu &gpu, TemplateKernelCache &cache, const RoutingKernelsConfig &config);

  const RoutingKernelsConfig &config() const { return config_; }
  size_t workspaceBytes(int64_t tokens) const {
    return routingWorkspaceLayout(config_, tokens).bytes;
  }

  // Router, top-K, (rounding), grouped rows and the inverse map, enqueued
  // on `stream`. The workspace must be 256-byte aligned and hold
  // workspaceBytes(tokens). Returns where everything is.
  RoutingBuffers route(const Stream &stream, const RouterInput &input, int64_t tokens,
                       CUdeviceptr workspace, size_t workspaceBytes) const;

  // out[t] = sum over t's rows r of y[r] (times scale[r] when applyScale),
  // y [maxRows or more][hidden] and out [T][hidden] in the dtype; hidden a
  // multiple of 8, both 16-byte aligned.
  void aggregate(const Stream &stream, const RoutingBuffers &routing, CUdeviceptr y,
                 CUdeviceptr out, int hidden, bool applyScale) const;

  // The per-expert counts the GEMMs read, copied to the host (waits for the
  // stream).
  std::vector<int32_t> downloadCounts(const Stream &stream, const RoutingBuffers &routing) const;

private:
  const Function &function(LayerKernel kernel) const {
    return *functions_[static_cast<size_t>(kernel)];
  }

  DeviceContextRef context_;
  RoutingKernelsConfig config_;
  std::shared_ptr<const CompiledTemplates> compiled_;
  Module module_;
  std::vector<std::optional<Function>> functions_; // by LayerKernel; empty when unused
};

} // namespace moejit
