// Value-type helpers of the Spec: enum names, targets, derived sizes.
#include "moejit/spec.h"
#include "compiler/spec/names.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <stdexcept>
#include <string>

namespace moejit {

namespace {

template <typename Enum, std::size_t N>
std::span<const NamedValue<Enum>> asSpan(const std::array<NamedValue<Enum>, N> &table) {
  return {table.data(), table.size()};
}

template <typename Enum> std::string_view nameOf(Enum value) {
  for (const auto &entry : namesOf<Enum>())
    if (entry.value == value)
      return entry.name;
  return "?";
}

struct ArchInfo {
  std::string_view arch;
  int smCount;
  int maxSharedBytesPerBlock;
};

// Opt-in dynamic shared memory per block and the SM count of the flagship
// part of each architecture (A100, RTX 3090-class, RTX 4090-class, H100 SXM).
constexpr std::array<ArchInfo, 5> kKnownArchs{{
    {"sm_80", 108, 166912},
    {"sm_86", 84, 101376},
    {"sm_89", 128, 101376},
    {"sm_90", 132, 232448},
    {"sm_90a", 132, 232448},
}};

} // namespace

template <> std::span<const NamedValue<DType>> namesOf<DType>() {
  static constexpr std::array<NamedValue<DType>, 2> table{{
      {DType::BF16, "bf16"},
      {DType::FP16, "fp16"},
  }};
  return asSpan(table);
}

template <> std::span<const NamedValue<Activation>> namesOf<Activation>() {
  static constexpr std::array<NamedValue<Activation>, 5> table{{
      {Activation::SwiGLU, "swiglu"},
      {Activation::GeGLU, "geglu"},
      {Activation::GeLU, "gelu"},
      {Activation::ReLU, "relu"},
      {Activation::None, "none"},
  }};
  return asSpan(table);
}

template <> std::span<const NamedValue<GateUpLayout>> namesOf<GateUpLayout>() {
  static constexpr std::array<NamedValue<GateUpLayout>, 2> table{{
      {GateUpLayout::Concatenated, "concatenated"},
      {GateUpLayout::Interleaved, "interleaved"},
  }};
  return asSpan(table);
}

template <> std::span<const NamedValue<ScoreFunc>> namesOf<ScoreFunc>() {
  static constexpr std::array<NamedValue<ScoreFunc>, 2> table{{
      {ScoreFunc::Softmax, "softmax"},
      {ScoreFunc::Sigmoid, "sigmoid"},
  }};
  return asSpan(table);
}

template <> std::span<const NamedValue<RoundingMode>> namesOf<RoundingMode>() {
  static constexpr std::array<NamedValue<RoundingMode>, 4> table{{
      {RoundingMode::None, "none"},
      {RoundingMode::Nearest, "nearest"},
      {RoundingMode::Up, "up"},
      {RoundingMode::Down, "down"},
  }};
  return asSpan(table);
}

template <> std::span<const NamedValue<WarpgroupMode>> namesOf<WarpgroupMode>() {
  static constexpr std::array<NamedValue<WarpgroupMode>, 3> table{{
      {WarpgroupMode::Cooperative, "cooperative"},
      {WarpgroupMode::PingPong, "pingpong"},
      {WarpgroupMode::Staggered, "staggered"},
  }};
  return asSpan(table);
}

template <> std::span<const NamedValue<Raster>> namesOf<Raster>() {
  static constexpr std::array<NamedValue<Raster>, 2> table{{
      {Raster::AlongM, "along_m"},
      {Raster::AlongN, "along_n"},
  }};
  return asSpan(table);
}

template <> std::span<const NamedValue<StoreMode>> namesOf<StoreMode>() {
  static constexpr std::array<NamedValue<StoreMode>, 2> table{{
      {StoreMode::Direct, "direct"},
      {StoreMode::Tma, "tma"},
  }};
  return asSpan(table);
}

template <> std::span<const NamedValue<GemmKind>> namesOf<GemmKind>() {
  static constexpr std::array<NamedValue<GemmKind>, 6> table{{
      {GemmKind::UpProj, "up_proj"},
      {GemmKind::DownProj, "down_proj"},
      {GemmKind::DH, "dh"},
      {GemmKind::DW1, "dw1"},
      {GemmKind::DW2, "dw2"},
      {GemmKind::DX, "dx"},
  }};
  return asSpan(table);
}

bool isIdentifier(std::string_view text) {
  if (text.empty())
    return false;
  auto isStart = [](char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_'; };
  auto isBody = [&](char c) { return isStart(c) || std::isdigit(static_cast<unsigned char>(c)); };
  return isStart(text.front()) && std::all_of(text.begin() + 1, text.end(), isBody);
}

std::string_view toString(DType v) { return nameOf(v); }
std::string_view toString(Activation v) { return nameOf(v); }
std::string_view toString(GateUpLayout v) { return nameOf(v); }
std::string_view toString(ScoreFunc v) { return nameOf(v); }
std::string_view toString(RoundingMode v) { return nameOf(v); }
std::string_view toString(WarpgroupMode v) { return nameOf(v); }
std::string_view toString(Raster v) { return nameOf(v); }
std::string_view toString(StoreMode v) { return nameOf(v); }
std::string_view toString(GemmKind v) { return nameOf(v); }

std::optional<DType> parseDType(std::string_view s) { return parseName<DType>(s); }
std::optional<Activation> parseActivation(std::string_view s) { return parseName<Activation>(s); }
std::optional<GateUpLayout> parseGateUpLayout(std::string_view s) {
  return parseName<GateUpLayout>(s);
}
std::optional<ScoreFunc> parseScoreFunc(std::string_view s) { return parseName<ScoreFunc>(s); }
std::optional<RoundingMode> parseRoundingMode(std::string_view s) {
  return parseName<RoundingMode>(s);
}
std::optional<WarpgroupMode> parseWarpgroupMode(std::string_view s) {
  return parseName<WarpgroupMode>(s);
}
std::optional<Raster> parseRaster(std::string_view s) { return parseName<Raster>(s); }
std::optional<StoreMode> parseStoreMode(std::string_view s) { return parseName<StoreMode>(s); }
std::optional<GemmKind> parseGemmKind(std::string_view s) { return parseName<GemmKind>(s); }

bool isGated(Activation act) { return act == Activation::SwiGLU || act == Activation::GeGLU; }

int dtypeBytes(DType dtype) {
  switch (dtype) {
  case DType::BF16:
  case DType::FP16:
    return 2;
  }
  return 2;
}

const GemmSpec *LayerSpec::gemm(GemmKind kind) const {
  auto it =
      std::find_if(gemms.begin(), gemms.end(), [&](const GemmSpec &g) { return g.kind == kind; });
  return it == gemms.end() ? nullptr : &*it;
}

int64_t LayerSpec::upColumns() const {
  return (isGated(activation) ? 2 : 1) * static_cast<int64_t>(intermediate);
}

const LayerSpec *Spec::layer(std::string_view name) const {
  auto it = std::find_if(layers.begin(), layers.end(),
                         [&](const LayerSpec &l) { return l.name == name; });
  return it == layers.end() ? nullptr : &*it;
}

int Target::computeCapability() const {
  // "sm_90a" -> 90: the digits after "sm_".
  int cc = 0;
  for (std::size_t i = 3; i < arch.size() && std::isdigit(static_cast<unsigned char>(arch[i])); ++i)
    cc = cc * 10 + (arch[i] - '0');
  return cc;
}

bool Target::hasWgmma() const { return arch == "sm_90a"; }

Target Target::fromArch(std::string_view arch) {
  for (const ArchInfo &info : kKnownArchs)
    if (info.arch == arch)
      return Target{std::string(arch), info.smCount, info.maxSharedBytesPerBlock};
  std::string known;
  for (const ArchInfo &info : kKnownArchs)
    known += (known.empty() ? "" : ", ") + std::string(info.arch);
  throw std::invalid_argument("unknown GPU architecture '" + std::string(arch) +
                              "'; moejit knows " + known);
}

} // namespace moejit
