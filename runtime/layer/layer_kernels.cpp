#include "runtime/layer/layer_kernels.h"

#include <algorithm>
#include <limits>

namespace moejit {
namespace {

constexpr size_t kAlignment = 256;
constexpr int kChunkTokens = 256;     // tokens per expert-histogram chunk
constexpr unsigned kScatterWarps = 4; // chunks per scatter block
constexpr unsigned kTopKWarps = 8;    // tokens per router_topk block
constexpr unsigned kLogitsTile = 32;  // T limit: kMaxGrid of these (conservative)
// router_logits: 4 warps, a 64-token x 64-expert output tile per block.
constexpr unsigned kLogitsThreads = 128, kLogitsTileM = 64, kLogitsTileN = 64;
constexpr unsigned kRoundingThreads = 512;
constexpr unsigned kMaxGrid = 65535; // grid.y limit, and the cap of grid-stride loops

std::string dtypeTag(DType dtype) { return dtype == DType::BF16 ? "0" : "1"; }
int roundingTag(RoundingMode mode) {
  switch (mode) {
  case RoundingMode::None:
    return 0;
  case RoundingMode::Nearest:
    return 1;
  case RoundingMode::Up:
    return 2;
  case RoundingMode::Down:
    return 3;
  }
  return 0;
}

unsigned blocksFor(int64_t items, int64_t perBlock) {
  return static_cast<unsigned>((items + perBlock - 1) / perBlock);
}

struct Launch {
  unsigned grid[3] = {1, 1, 1};
  unsigned block[3] = {1, 1, 1};
  unsigned sharedBytes = 0;
};

// Kernel parameters are passed by address; each argument's type must match
// the kernel's parameter (pointers as CUdeviceptr, int, long long).
template <class... Args>
void launch(const Function &function, const Launch &shape, const Stream &stream, Args... args) {
  for (unsigned extent : shape.grid)
    if (extent == 0)
      return;
  void *params[] = {static_cast<void *>(&args)...};
  const CudaDriver &cu = function.driver();
  const CUresult result = cu.cuLaunchKernel.fn(
      function.handle(), shape.grid[0], shape.grid[1], shape.grid[2], shape.block[0],
      shape.block[1], shape.block[2], shape.sharedBytes, stream.handle(), params, nullptr);
  if (result != CUDA_SUCCESS)
    throw Error("cuLaunchKernel of '" + function.name() + "' failed: " + cu.describe(result),
                ErrorKind::CudaCall);
}

Launch linear(unsigned blocks, unsigned threads, unsigned sharedBytes = 0) {
  Launch shape;
  shape.grid[0] = blocks;
  shape.block[0] = threads;
  shape.sharedBytes = sharedBytes;
  return shape;
}

void memsetZero(const Stream &stream, const CudaDriver &cu, CUdeviceptr pointer, size_t ints) {
  if (ints > 0)
    cu.call(cu.cuMemsetD32Async, pointer, 0u, ints, stream.handle());
}

std::string targetArch(const Gpu &gpu) {
  const DeviceProperties &p = gpu.properties();
  return routingKernelArch(p.computeMajor * 10 + p.computeMinor);
}

Module loadModule(const Gpu &gpu, const std::shared_ptr<const CompiledTemplates> &compiled) {
  return compiled->isCubin ? Module::fromCubin(gpu, compiled->image)
                           : Module::fromPtx(gpu, std::string_view(compiled->image.data(),
                                                                   compiled->image.size()));
}

} // namespace

std::string routingKernelArch(int computeCapability) {
  return "sm_" + std::to_string(computeCapability);
}

RoutingKernelsConfig RoutingKernelsConfig::fromLayer(const LayerSpec &layer, int upProjTileM) {
  RoutingKernelsConfig config;
  config.dtype = layer.dtype;
  config.experts = layer.experts;
  config.topK = layer.router.topK;
  config.scores = layer.router.scores;
  config.renormalize = layer.router.renormalize;
  config.rounding = layer.rounding.mode;
  if (config.rounds())
    config.roundingTile = layer.rounding.tile > 0 ? layer.rounding.tile : upProjTileM;
  return config;
}

void RoutingKernelsConfig::validate() const {
  if (experts < 1 || experts > 1024)
    throw Error("layer kernels: E = " + std::to_string(experts) + " is outside [1, 1024]");
  if (topK < 1 || topK > std::min(experts, 32))
    throw Error("layer kernels: K = " + std::to_string(topK) + " is outside [1, min(E, 32)]");
  if (rounds() && roundingTile < 1)
    throw Error("layer kernels: token rounding needs a tile of at least 1 token, got " +
                std::to_string(roundingTile));
}

std::vector<std::string> layerKernelNameExpressions(const RoutingKernelsConfig &config) {
  config.validate();
  const std::string k = std::to_string(config.topK);
  std::vector<std::string> names(static_cast<size_t>(LayerKernel::Count));
  auto set = [&](LayerKernel kernel, std::string expression) {
    names[static_cast<size_t>(kernel)] = std::move(expression);
  };
  set(LayerKernel::RouterLogits, "moejit::router_logits<" + dtypeTag(config.dtype) + ">");
  set(LayerKernel::RouterTopK, "moejit::router_topk<" + std::to_string(config.experts) + ", " + k +
                                   ", " + (config.scores == ScoreFunc::Softmax ? "0" : "1") + ", " +
                                   (config.renormalize ? "true" : "false") + ">");
  set(LayerKernel::CountExpertChunks, "moejit::count_expert_chunks<" + k + ">");
  set(LayerKernel::ScanExpertChunks, "moejit::scan_expert_chunks");
  set(LayerKernel::ExclusiveScan, "moejit::exclusive_scan");
  if (config.rounds()) {
    set(LayerKernel::RoundedExpertOffsets,
        "moejit::rounded_expert_offsets<" + std::to_string(roundingTag(config.rounding)) + ">");
    set(LayerKernel::RoundExpertRows, "moejit::round_expert_rows");
  }
  set(LayerKernel::ScatterExpertRows, "moejit::scatter_expert_rows<" + k + ">");
  set(LayerKernel::CountTokenRows, "moejit::count_token_rows");
  set(LayerKernel::FillTokenRows, "moejit::fill_token_rows");
  set(LayerKernel::SortTokenRows, "moejit::sort_token_rows");
  set(LayerKernel::Aggregate, "moejit::aggregate_rows<" + dtypeTag(config.dtype) + ", false>");
  set(LayerKernel::AggregateScaled, "moejit::aggregate_rows<" + dtypeTag(config.dtype) + ", true>");
  return names;
}

TemplateProgram layerKernelProgram(const RoutingKernelsConfig &config, const std::string &arch) {
  TemplateProgram program;
  program.arch = arch;
  for (std::string &name : layerKernelNameExpressions(config))
    if (!name.empty())
      program.nameExpressions.push_back(std::move(name));
  return program;
}

int64_t maxGroupedRows(const RoutingKernelsConfig &config, int64_t tokens) {
  const int64_t topkRows = tokens * config.topK;
  if (config.rounding == RoundingMode::None || config.rounding == RoundingMode::Down)
    return topkRows;
  return std::min(tokens * config.experts,
                  topkRows + static_cast<int64_t>(config.experts) * (config.roundingTile - 1));
}

RoutingWorkspaceLayout routingWorkspaceLayout(const RoutingKernelsConfig &config, int64_t tokens) {
  config.validate();
  constexpr int64_t kIndexLimit = std::numeric_limits<int32_t>::max();
  if (tokens < 0 || tokens > static_cast<int64_t>(kMaxGrid) * kLogitsTile)
    throw Error("layer kernels: T = " + std::to_string(tokens) + " is outside [0, " +
                std::to_string(static_cast<int64_t>(kMaxGrid) * kLogitsTile) + "]");
  RoutingWorkspaceLayout layout;
  layout.maxRows = maxGroupedRows(config, tokens);
  if (layout.maxRows > kIndexLimit || tokens * config.experts > kIndexLimit)
    throw Error("layer kernels: T = " + std::to_string(tokens) + " with E = " +
                std::to_string(config.experts) + ", K = " + std::to_string(config.topK) +
                " exceeds the kernels' 32-bit row indices");
  layout.chunks = static_cast<int>((tokens + kChunkTokens - 1) / kChunkTokens);
  const int64_t experts = config.experts, slots = tokens * config.topK;
  auto take = [&](int64_t elements, size_t elementBytes) {
    const size_t offset = layout.bytes;
    layout.bytes +=
        (static_cast<size_t>(elements) * elementBytes + kAlignment - 1) / kAlignment * kAlignment;
    return offset;
  };
  layout.logits = take(tokens * experts, 4);
  layout.topkIds = take(slots, 4);
  layout.topkScores = take(slots, 4);
  layout.chunkCounts = take(static_cast<int64_t>(layout.chunks) * experts, 4);
  layout.topkCounts = take(experts, 4);
  layout.topkOffsets = take(experts + 1, 4);
  layout.topkGather = take(slots, 4);
  layout.topkScale = take(slots, 4);
  if (config.rounds()) {
    layout.scoresByExpert = take(tokens * experts, 4);
    layout.counts = take(experts, 4);
    layout.offsets = take(experts + 1, 4);
    layout.gather = take(layout.maxRows, 4);
    layout.scale = take(layout.maxRows, 4);
  } else {
    layout.counts = layout.topkCounts;
    layout.offsets = layout.topkOffsets;
    layout.gather = layout.topkGather;
    layout.scale = layout.topkScale;
  }
  layout.tokenCounts = take(tokens, 4);
  layout.tokenOffsets = take(tokens + 1, 4);
  layout.tokenRows = take(layout.maxRows, 4);
  return layout;
}

RoutingBuffers RoutingWorkspaceLayout::at(CUdeviceptr base, int64_t tokens) const {
  RoutingBuffers b;
  b.tokens = tokens;
  b.maxRows = maxRows;
  b.logits = base + logits;
  b.topkIds = base + topkIds;
  b.topkScores = base + topkScores;
  b.scoresByExpert = scoresByExpert == 0 ? 0 : base + scoresByExpert;
  b.chunkCounts = base + chunkCounts;
  b.topkCounts = base + topkCounts;
  b.topkOffsets = base + topkOffsets;
  b.topkGather = base + topkGather;
  b.topkScale = base + topkScale;
  b.counts = base + counts;
  b.offsets = base + offsets;
  b.gather = base + gather;
  b.scale = base + scale;
  b.tokenCounts = base + tokenCounts;
  b.tokenOffsets = base + tokenOffsets;
  b.tokenRows = base + tokenRows;
  return b;
}

RoutingKernels::RoutingKernels(const Gpu &gpu, TemplateKernelCache &cache,
                           const RoutingKernelsConfig &config)
    : context_(gpu.context()), config_(config),
      compiled_(cache.compile(layerKernelProgram(config, targetArch(gpu)))),
      module_(loadModule(gpu, compiled_)) {
  size_t next = 0;
  for (const std::string &name : layerKernelNameExpressions(config)) {
    if (name.empty())
      functions_.emplace_back();
    else
      functions_.emplace_back(module_.function(compiled_->loweredNames.at(next++)));
  }
}

RoutingBuffers RoutingKernels::route(const Stream &stream, const RouterInput &input, int64_t tokens,
                                   CUdeviceptr workspace, size_t workspaceBytes) const {
  const RoutingWorkspaceLayout layout = routingWorkspaceLayout(config_, tokens);
  if (workspaceBytes < layout.bytes)
    throw Error("layer kernels: the workspace holds " + std::to_string(workspaceBytes) +
                " bytes; T = " + std::to_string(tokens) + " needs " + std::to_string(layout.bytes));
  if (workspace % kAlignment != 0)
    throw Error("layer kernels: the workspace must be 256-byte aligned");
  const bool givenLogits = input.logits != 0;
  if (givenLogits == (input.x != 0 || input.weights != 0))
    throw Error("layer kernels: give either router logits or X and the router weights");
  if (!givenLogits && (input.x == 0 || input.weights == 0 || input.hidden < 1))
    throw Error("layer kernels: the router needs X, its weights and d >= 1");

  RoutingBuffers b = layout.at(workspace, tokens);
  const CudaDriver &cu = *context_->driver;
  const int t = static_cast<int>(tokens), e = config_.experts;
  const unsigned expertBytes = static_cast<unsigned>(e) * 4;

  if (givenLogits) {
    b.logits = input.logits;
  } else {
    Launch shape;
    shape.grid[0] = blocksFor(e, kLogitsTileN);
    shape.grid[1] = blocksFor(tokens, kLogitsTileM);
    shape.block[0] = kLogitsThreads;
    launch(function(LayerKernel::RouterLogits), shape, stream, input.x, input.weights, b.logits, t,
           input.hidden, e);
  }
  launch(function(LayerKernel::RouterTopK), linear(blocksFor(tokens, kTopKWarps), kTopKWarps * 32),
         stream, b.logits, b.topkIds, b.topkScores, b.scoresByExpert, t);
  launch(function(LayerKernel::CountExpertChunks), linear(layout.chunks, 256, expertBytes), stream,
         b.topkIds, t, e, kChunkTokens, b.chunkCounts);
  launch(function(LayerKernel::ScanExpertChunks), linear(blocksFor(e, 256), 256), stream,
         b.chunkCounts, layout.chunks, e, b.topkCounts);
  if (config_.rounds())
    launch(function(LayerKernel::RoundedExpertOffsets), linear(1, 1024), stream, b.topkCounts, e, t,
           config_.roundingTile, b.topkOffsets, b.counts, b.offsets);
  else
    launch(function(LayerKernel::ExclusiveScan), linear(1, 1024), stream, b.topkCounts,
           b.topkOffsets, static_cast<long long>(e));
  launch(function(LayerKernel::ScatterExpertRows),
         linear(blocksFor(layout.chunks, kScatterWarps), kScatterWarps * 32,
                kScatterWarps * expertBytes),
         stream, b.topkIds, b.topkScores, t, e, kChunkTokens, b.chunkCounts, b.topkOffsets,
         b.topkGather, b.topkScale);
  if (config_.rounds())
    launch(function(LayerKernel::RoundExpertRows), linear(e, kRoundingThreads), stream,
           b.scoresByExpert, t, b.topkOffsets, b.topkGather, b.topkScale, b.offsets, b.gather,
           b.scale);

  // The inverse map: rows per token, their prefix sum, then each token's
  // rows placed and sorted.
  const unsigned rowBlocks = std::min<unsigned>(blocksFor(layout.maxRows, 256), kMaxGrid);
  memsetZero(stream, cu, b.tokenCounts, tokens);
  launch(function(LayerKernel::CountTokenRows), linear(rowBlocks, 256), stream, b.gather, b.offsets,
         e, b.tokenCounts);
  launch(function(LayerKernel::ExclusiveScan), linear(1, 1024), stream, b.tokenCounts,
         b.tokenOffsets, static_cast<long long>(tokens));
  memsetZero(stream, cu, b.tokenCounts, tokens);
  launch(function(LayerKernel::FillTokenRows), linear(rowBlocks, 256), stream, b.gather, b.offsets,
         e, b.tokenOffsets, b.tokenCounts, b.tokenRows);
  launch(function(LayerKernel::SortTokenRows), linear(blocksFor(tokens, 256), 256), stream,
         b.tokenOffsets, b.tokenRows, t);
  return b;
}

void RoutingKernels::aggregate(const Stream &stream, const RoutingBuffers &routing, CUdeviceptr y,
                             CUdeviceptr out, int hidden, bool applyScale) const {
  if (hidden < 8 || hidden % 8 != 0)
    throw Error("aggregation: d = " + std::to_string(hidden) + " must be a positive multiple of 8");
  if (y % 16 != 0 || out % 16 != 0)
    throw Error("aggregation: Y and O must be 16-byte aligned");
  if (routing.tokens > 0 && (y == 0 || out == 0))
    throw Error("aggregation: Y and O must not be null");
  const unsigned threads = std::clamp<unsigned>((hidden / 8 + 31) / 32 * 32, 32, 256);
  launch(function(applyScale ? LayerKernel::AggregateScaled : LayerKernel::Aggregate),
         linear(static_cast<unsigned>(routing.tokens), threads), stream, y, routing.tokenOffsets,
         routing.tokenRows, routing.scale, out, hidden);
}

std::vector<int32_t> RoutingKernels::downloadCounts(const Stream &stream,
                                                  const RoutingBuffers &routing) const {
  std::vector<int32_t> counts(config_.experts);
  const CudaDriver &cu = *context_->driver;
  cu.call(cu.cuMemcpyDtoHAsync, counts.data(), routing.counts, counts.size() * sizeof(int32_t),
          stream.handle());
  stream.synchronize();
  return counts;
}

} // namespace moejit
