// The checked, canonical model of an MoE layer and its grouped GEMMs.
//
// A Spec is a plain value type: it can be parsed from .moe text
// (moejit/dsl.h) or built directly in C++ and then completed and checked with
// `resolve()`. Its canonical JSON and content hash feed the kernel cache key.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace moejit {

enum class DType { BF16, FP16 };
enum class Activation { SwiGLU, GeGLU, GeLU, ReLU, None };
// Concatenated: W1[e] columns [0, n) are the gate, [n, 2n) the up half.
// Interleaved: column 2j is gate j, column 2j+1 is up j.
enum class GateUpLayout { Concatenated, Interleaved };
enum class ScoreFunc { Softmax, Sigmoid };
enum class RoundingMode { None, Nearest, Up, Down };
enum class WarpgroupMode { Cooperative, PingPong, Staggered };
enum class Raster { AlongM, AlongN };
// How the Hopper path's epilogue writes its outputs: straight from the
// accumulator registers (direct), or through shared staging and TMA stores
// (tma; docs/schedules.md).
enum class StoreMode { Direct, Tma };

// The grouped GEMMs of a layer. See docs/kernel-abi.md for the operands.
enum class GemmKind { UpProj, DownProj, DH, DW1, DW2, DX };
inline constexpr GemmKind kAllGemmKinds[] = {GemmKind::UpProj, GemmKind::DownProj,
                                             GemmKind::DH,     GemmKind::DW1,
                                             GemmKind::DW2,    GemmKind::DX};

// True for the GLU activations that need a gate and an up half (W1 is d x 2n).
bool isGated(Activation act);

struct TileShape {
  int m = 0, n = 0, k = 0;
  friend bool operator==(const TileShape &, const TileShape &) = default;
};
struct ClusterShape {
  int m = 1, n = 1;
  friend bool operator==(const ClusterShape &, const ClusterShape &) = default;
};

// A schedule as written: every field optional. `resolve()` fills the missing
// ones with `defaultSchedule()`.
struct SchedulePatch {
  std::optional<TileShape> tile;
  std::optional<int> stages;
  std::optional<ClusterShape> cluster;
  std::optional<WarpgroupMode> warpgroups;
  std::optional<Raster> raster;
  std::optional<bool> persistent;
  std::optional<StoreMode> stores;
  friend bool operator==(const SchedulePatch &, const SchedulePatch &) = default;
};

// A complete schedule.
struct Schedule {
  TileShape tile;
  int stages = 0;
  ClusterShape cluster;
  WarpgroupMode warpgroups = WarpgroupMode::Cooperative;
  Raster raster = Raster::AlongM;
  bool persistent = false;
  StoreMode stores = StoreMode::Direct;
  friend bool operator==(const Schedule &, const Schedule &) = default;
};

struct GemmSpec {
  GemmKind kind = GemmKind::UpProj;
  Schedule schedule;
  friend bool operator==(const GemmSpec &, const GemmSpec &) = default;
};

struct RouterSpec {
  ScoreFunc scores = ScoreFunc::Softmax;
  int topK = 0;
  bool renormalize = true;
  friend bool operator==(const RouterSpec &, const RouterSpec &) = default;
};

struct RoundingSpec {
  RoundingMode mode = RoundingMode::None;
  // The M tile tokens are rounded to; 0 means "the up-projection's M tile".
  int tile = 0;
  friend bool operator==(const RoundingSpec &, const RoundingSpec &) = default;
};

struct LayerSpec {
  std::string name;
  int experts = 0;      // E
  int hidden = 0;       // d
  int intermediate = 0; // n
  DType dtype = DType::BF16;
  Activation activation = Activation::SwiGLU;
  GateUpLayout gateUp = GateUpLayout::Concatenated;
  RouterSpec router;
  RoundingSpec rounding;
  // Sorted by kind, each kind at most once. Empty before resolve() means the
  // standard set (all six).
  std::vector<GemmSpec> gemms;
  friend bool operator==(const LayerSpec &, const LayerSpec &) = default;

  const GemmSpec *gemm(GemmKind kind) const;
  // Columns of W1 (2n for gated activations, n otherwise).
  int64_t upColumns() const;
};

// A whole .moe file: one or more layers.
struct Spec {
  std::vector<LayerSpec> layers;
  friend bool operator==(const Spec &, const Spec &) = default;

  const LayerSpec *layer(std::string_view name) const;
};

// The GPU a spec is checked and scheduled for.
struct Target {
  std::string arch = "sm_90a"; // sm_80, sm_86, sm_89, sm_90, sm_90a, ...
  int smCount = 132;
  int maxSharedBytesPerBlock = 232448; // opt-in maximum of dynamic smem

  // Compute capability as an integer, e.g. 90 for sm_90a.
  int computeCapability() const;
  // True when wgmma/TMA (sm_90a) are available.
  bool hasWgmma() const;
  friend bool operator==(const Target &, const Target &) = default;

  static Target fromArch(std::string_view arch); // throws std::invalid_argument
};

// Names used by the DSL, JSON and diagnostics.
std::string_view toString(DType);
std::string_view toString(Activation);
std::string_view toString(GateUpLayout);
std::string_view toString(ScoreFunc);
std::string_view toString(RoundingMode);
std::string_view toString(WarpgroupMode);
std::string_view toString(Raster);
std::string_view toString(StoreMode);
std::string_view toString(GemmKind);
std::optional<DType> parseDType(std::string_view);
std::optional<Activation> parseActivation(std::string_view);
std::optional<GateUpLayout> parseGateUpLayout(std::string_view);
std::optional<ScoreFunc> parseScoreFunc(std::string_view);
std::optional<RoundingMode> parseRoundingMode(std::string_view);
std::optional<WarpgroupMode> parseWarpgroupMode(std::string_view);
std::optional<Raster> parseRaster(std::string_view);
std::optional<StoreMode> parseStoreMode(std::string_view);
std::optional<GemmKind> parseGemmKind(std::string_view);

int dtypeBytes(DType);

} // namespace moejit
