// Semantic checks of a Spec: one validator for DSL input and C++-built specs.
#include "compiler/spec/check.h"

#include "compiler/spec/names.h"
#include "moejit/dsl.h"
#include "moejit/problem.h"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <limits>

namespace moejit {

namespace {

// 1 for the first layer of a name, 2 for the second, ...
int layerOccurrence(const Spec &spec, std::size_t layerIndex) {
  const std::string &name = spec.layers[layerIndex].name;
  return static_cast<int>(
      std::count_if(spec.layers.begin(), spec.layers.begin() + layerIndex + 1,
                    [&](const LayerSpec &layer) { return layer.name == name; }));
}

int gemmOccurrence(const LayerSpec &layer, std::size_t gemmIndex) {
  GemmKind kind = layer.gemms[gemmIndex].kind;
  return static_cast<int>(std::count_if(layer.gemms.begin(), layer.gemms.begin() + gemmIndex + 1,
                                        [&](const GemmSpec &gemm) { return gemm.kind == kind; }));
}

std::string occurrenceSuffix(int occurrence) {
  return occurrence > 1 ? "#" + std::to_string(occurrence) : "";
}

bool isPowerOfTwo(int value) {
  return value > 0 && std::has_single_bit(static_cast<unsigned>(value));
}

// What a target's MMA instructions accept as a tile.
struct TileRule {
  int mMultiple, nMultiple, kMultiple;
  std::string_view instruction;
};

// N in multiples of 16 on both paths: the kernels' warps and the op
// verifier split N in 16-column steps (wgmma itself would take 8).
TileRule tileRule(const Target &target) {
  if (target.hasWgmma())
    return {64, 16, 16, "wgmma"};
  return {16, 16, 16, "mma.sync"};
}

class Checker {
public:
  Checker(const Spec &spec, const Target &target, Diagnostics &diags)
      : spec_(spec), target_(target), diags_(diags) {}

  void run() {
    if (spec_.layers.empty())
      report("", "the spec has no layers", "add a block 'layer NAME { ... }'");
    for (std::size_t i = 0; i < spec_.layers.size(); ++i)
      checkLayer(i);
  }

private:
  void report(std::string path, std::string message, std::string hint = {}) {
    Diagnostic diag;
    diag.path = std::move(path);
    diag.message = std::move(message);
    diag.hint = std::move(hint);
    diags_.add(std::move(diag));
  }

  void checkLayer(std::size_t index) {
    const LayerSpec &layer = spec_.layers[index];
    const std::string path = layerPath(spec_, index);
    if (!isIdentifier(layer.name))
      report(path, fmt::format("layer name '{}' is not an identifier", layer.name),
             "use letters, digits and '_', not starting with a digit");
    else if (layerOccurrence(spec_, index) > 1)
      report(path, fmt::format("duplicate layer name '{}'", layer.name),
             "layer names must be unique in a file; rename one of them");

    bool sizesValid = checkSize(path + ".experts", "experts", layer.experts, kMaxExperts, 1);
    sizesValid &= checkSize(path + ".hidden", "hidden", layer.hidden,
                            std::numeric_limits<int>::max(), kElementAlignment);
    sizesValid &= checkSize(path + ".intermediate", "intermediate", layer.intermediate,
                            std::numeric_limits<int>::max(), kElementAlignment);
    if (sizesValid) {
      int64_t w1Elements = static_cast<int64_t>(layer.hidden) * layer.upColumns();
      if (w1Elements > std::numeric_limits<int32_t>::max()) {
        sizesValid = false;
        report(path + ".intermediate",
               fmt::format("W1 of one expert has {} x {} = {} elements, more than 32-bit "
                           "indices address (2^31 - 1)",
                           layer.hidden, layer.upColumns(), w1Elements),
               "kernels index inside one expert's weights with 32 bits; use smaller "
               "hidden or intermediate sizes");
      }
    }

    if (layer.gateUp == GateUpLayout::Interleaved && !isGated(layer.activation))
      report(path + ".gate_up",
             fmt::format("gate_up = interleaved needs a gated activation, but activation "
                         "is {}",
                         toString(layer.activation)),
             "use activation = swiglu or geglu, or gate_up = concatenated");

    checkRouter(path, layer);

    const TileShape *upTile = nullptr;
    for (std::size_t g = 0; g < layer.gemms.size(); ++g) {
      bool tileValid = checkGemm(index, g, sizesValid);
      if (tileValid && layer.gemms[g].kind == GemmKind::UpProj && !upTile)
        upTile = &layer.gemms[g].schedule.tile;
    }
    checkRounding(path, layer, upTile);
  }

  // A positive size no larger than `max` and a multiple of `multiple`.
  bool checkSize(const std::string &path, std::string_view key, int value, int max, int multiple) {
    if (value <= 0) {
      report(path, fmt::format("{} must be positive, got {}", key, value));
      return false;
    }
    if (value > max) {
      report(path, fmt::format("{} = {} is more than the {} moejit supports", key, value, max),
             fmt::format("use {} <= {}", key, max));
      return false;
    }
    if (value % multiple != 0) {
      report(path,
             fmt::format("{} = {} is not a multiple of {} elements: rows of the operands "
                         "must be multiples of 16 bytes for the vectorised copies",
                         key, value, multiple),
             fmt::format("pad the weights to {} or {}", value / multiple * multiple,
                         (value / multiple + 1) * multiple));
      return false;
    }
    return true;
  }

  void checkRouter(const std::string &layerPath, const LayerSpec &layer) {
    const std::string path = layerPath + ".router.top_k";
    int topK = layer.router.topK;
    if (topK <= 0)
      report(path, fmt::format("router.top_k must be positive, got {}", topK));
    else if (topK > kMaxTopK)
      report(path,
             fmt::format("router.top_k = {} is more than the {} moejit supports", topK, kMaxTopK),
             fmt::format("use top_k <= {}", kMaxTopK));
    else if (layer.experts > 0 && topK > layer.experts)
      report(path,
             fmt::format("router.top_k = {} is more than the {} experts of the layer", topK,
                         layer.experts),
             fmt::format("use top_k <= experts ({})", layer.experts));
  }

  void checkRounding(const std::string &layerPath, const LayerSpec &layer,
                     const TileShape *upTile) {
    const std::string path = layerPath + ".rounding.tile";
    int tile = layer.rounding.tile;
    if (tile < 0 || tile % kRoundingTileMultiple != 0) {
      report(path,
             fmt::format("rounding.tile must be 0 or a positive multiple of {}, got {}",
                         kRoundingTileMultiple, tile),
             "use 0 to round to the up_proj M tile, or e.g. tile = 128");
      return;
    }
    if (tile == 0)
      return;
    if (layer.rounding.mode == RoundingMode::None) {
      report(path, fmt::format("rounding.tile = {} is set but rounding.mode is none", tile),
             "set mode = nearest | up | down, or tile = 0");
      return;
    }
    if (upTile && tile % upTile->m != 0)
      report(path,
             fmt::format("rounding.tile = {} is not a multiple of the up_proj M tile {}, so "
                         "expert tiles would still be padded",
                         tile, upTile->m),
             fmt::format("use a multiple of {}, or tile = 0 for the up_proj M tile", upTile->m));
  }

  // Returns whether the tile is legal (later checks build on it).
  bool checkGemm(std::size_t layerIndex, std::size_t gemmIndex, bool sizesValid) {
    const LayerSpec &layer = spec_.layers[layerIndex];
    const GemmSpec &gemm = layer.gemms[gemmIndex];
    const Schedule &schedule = gemm.schedule;
    const std::string path = gemmPath(spec_, layerIndex, gemmIndex);
    const std::string_view kind = toString(gemm.kind);

    if (gemmOccurrence(layer, gemmIndex) > 1)
      report(path, fmt::format("duplicate gemm {} in layer '{}'", kind, layer.name),
             "each GEMM kind appears at most once per layer; merge the two blocks");

    // Default schedules derive from the sizes: with bad sizes they would only
    // repeat the size errors.
    if (!sizesValid)
      return false;

    const TileRule rule = tileRule(target_);
    bool tileValid =
        checkTileDim(path + ".tile.m", kind, 'M', schedule.tile.m, rule.mMultiple, rule);
    tileValid &= checkTileDim(path + ".tile.n", kind, 'N', schedule.tile.n, rule.nMultiple, rule);
    tileValid &= checkTileDim(path + ".tile.k", kind, 'K', schedule.tile.k, rule.kMultiple, rule);

    bool stagesValid = schedule.stages >= kMinStages && schedule.stages <= kMaxStages;
    if (!stagesValid)
      report(path + ".stages",
             fmt::format("{} stages must be between {} and {}, got {}", kind, kMinStages,
                         kMaxStages, schedule.stages),
             "2 to 4 stages usually hide the memory latency");

    checkCluster(path, kind, schedule.cluster);

    if (tileValid && stagesValid) {
      // The pipeline of the path that will run: the Hopper stages are
      // unpadded swizzled rows, the portable ones padded.
      const GemmProblem problem = makeGemmProblem(layer, gemm);
      const bool hopper = selectKernelPath(problem, target_) == KernelPath::Hopper;
      const int64_t bytes =
          hopper ? hopperSharedBytes(problem, target_) : pipelineSharedBytes(problem);
      // The portable path's warps (at most 8) keep their C tile in registers.
      if (!hopper) {
        const WarpLayout warps = portableWarpLayout(schedule);
        const int64_t accumulators = int64_t(schedule.tile.m / warps.m) *
                                     (schedule.tile.n / warps.n) / kWarpThreads;
        if (accumulators > kMaxPortableAccumulators)
          report(path,
                 fmt::format("the {} tile {}x{} gives each of its {} warps a {}x{} piece of C: "
                             "{} accumulator registers per thread, more than the {} the "
                             "portable path allows",
                             kind, schedule.tile.m, schedule.tile.n, warps.m * warps.n,
                             schedule.tile.m / warps.m, schedule.tile.n / warps.n, accumulators,
                             kMaxPortableAccumulators),
                 "use a smaller tile, e.g. 128x256 or 256x128");
      }
      if (bytes > target_.maxSharedBytesPerBlock)
        report(path,
               fmt::format("the {} pipeline ({}x{}x{} tile, {} stages) needs {} bytes of "
                           "shared memory, more than the {} bytes {} allows per block",
                           kind, schedule.tile.m, schedule.tile.n, schedule.tile.k, schedule.stages,
                           bytes, target_.maxSharedBytesPerBlock, target_.arch),
               "use fewer stages or a smaller tile");
    }
    return tileValid;
  }

  bool checkTileDim(const std::string &path, std::string_view kind, char dim, int value,
                    int multiple, const TileRule &rule) {
    if (value > 0 && value % multiple == 0 && value <= kMaxTileDim)
      return true;
    report(path,
           fmt::format("{} tile {} = {} is not legal on {}: {} needs a multiple of {} "
                       "between {} and {}",
                       kind, dim, value, target_.arch, rule.instruction, multiple, multiple,
                       kMaxTileDim),
           fmt::format("e.g. {} = {}", dim,
                       value <= multiple ? multiple
                                         : std::min(kMaxTileDim, value / multiple * multiple)));
    return false;
  }

  void checkCluster(const std::string &path, std::string_view kind, const ClusterShape &cluster) {
    const std::string clusterPath = path + ".cluster";
    if (!isPowerOfTwo(cluster.m) || !isPowerOfTwo(cluster.n)) {
      report(isPowerOfTwo(cluster.m) ? clusterPath + ".n" : clusterPath + ".m",
             fmt::format("{} cluster {}x{} needs powers of two in both dimensions", kind, cluster.m,
                         cluster.n),
             "use 1, 2, 4 or 8, e.g. cluster = 2x1");
      return;
    }
    if (cluster.m * cluster.n > kMaxClusterBlocks) {
      report(clusterPath,
             fmt::format("{} cluster {}x{} has {} blocks, more than the portable maximum of {}",
                         kind, cluster.m, cluster.n, cluster.m * cluster.n, kMaxClusterBlocks),
             "use a cluster of at most 8 blocks, e.g. 2x1 or 2x2");
      return;
    }
    if (cluster.m * cluster.n > 1 && target_.computeCapability() < 90)
      report(clusterPath,
             fmt::format("{} cluster {}x{} needs thread block clusters (sm_90 or newer), but "
                         "the target is {}",
                         kind, cluster.m, cluster.n, target_.arch),
             "use cluster = 1x1 for this target");
  }

  const Spec &spec_;
  const Target &target_;
  Diagnostics &diags_;
};

} // namespace

std::string layerPath(const Spec &spec, std::size_t layerIndex) {
  const std::string &name = spec.layers[layerIndex].name;
  std::string base = name.empty() ? fmt::format("<layer {}>", layerIndex + 1) : name;
  return base + occurrenceSuffix(layerOccurrence(spec, layerIndex));
}

std::string gemmPath(const Spec &spec, std::size_t layerIndex, std::size_t gemmIndex) {
  const LayerSpec &layer = spec.layers[layerIndex];
  return fmt::format("{}.gemm.{}{}", layerPath(spec, layerIndex),
                     toString(layer.gemms[gemmIndex].kind),
                     occurrenceSuffix(gemmOccurrence(layer, gemmIndex)));
}

bool scheduleAccepted(const LayerSpec &layer, GemmKind kind, const Target &target,
                      const Schedule &schedule) {
  Spec probe;
  probe.layers.push_back(layer);
  probe.layers.back().gemms = {GemmSpec{kind, schedule}};
  Diagnostics ignored;
  return checkSpec(probe, target, ignored);
}

Schedule openSchedule(const LayerSpec &layer, GemmKind kind, const Target &target,
                      const ScheduleSource *tuned) {
  if (tuned)
    if (std::optional<Schedule> schedule = tuned->find(layer, kind, target);
        schedule && scheduleAccepted(layer, kind, target, *schedule))
      return *schedule;
  return defaultSchedule(layer, kind, target);
}

void addStandardGemms(LayerSpec &layer, const Target &target, const ScheduleSource *tuned) {
  if (!layer.gemms.empty())
    return;
  for (GemmKind kind : kAllGemmKinds)
    layer.gemms.push_back(GemmSpec{kind, openSchedule(layer, kind, target, tuned)});
}

void sortGemms(LayerSpec &layer) {
  std::stable_sort(layer.gemms.begin(), layer.gemms.end(),
                   [](const GemmSpec &a, const GemmSpec &b) { return a.kind < b.kind; });
}

bool checkSpec(const Spec &spec, const Target &target, Diagnostics &diags) {
  std::size_t before = diags.errorCount();
  Checker(spec, target, diags).run();
  return diags.errorCount() == before;
}

bool resolveSpec(Spec &spec, const Target &target, Diagnostics &diags,
                 const ScheduleSource *tuned) {
  for (LayerSpec &layer : spec.layers) {
    const bool standard = layer.gemms.empty();
    addStandardGemms(layer, target, tuned);
    if (standard)
      continue;
    // In C++ a default-constructed schedule, a zero tile or zero stages mean
    // "choose for me".
    for (GemmSpec &gemm : layer.gemms) {
      if (gemm.schedule == Schedule{}) {
        gemm.schedule = openSchedule(layer, gemm.kind, target, tuned);
        continue;
      }
      Schedule defaults = defaultSchedule(layer, gemm.kind, target);
      if (gemm.schedule.tile == TileShape{})
        gemm.schedule.tile = defaults.tile;
      if (gemm.schedule.stages == 0)
        gemm.schedule.stages = defaults.stages;
    }
  }
  bool ok = checkSpec(spec, target, diags);
  for (LayerSpec &layer : spec.layers)
    sortGemms(layer);
  return ok;
}

} // namespace moejit
