// The spelling of every enum value in the DSL, JSON and diagnostics. One table
// per enum serves toString, the parse* functions and the "valid values" hints.
#pragma once

#include "moejit/spec.h"

#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace moejit {

template <typename Enum> struct NamedValue {
  Enum value;
  std::string_view name;
};

template <typename Enum> std::span<const NamedValue<Enum>> namesOf();

template <> std::span<const NamedValue<DType>> namesOf<DType>();
template <> std::span<const NamedValue<Activation>> namesOf<Activation>();
template <> std::span<const NamedValue<GateUpLayout>> namesOf<GateUpLayout>();
template <> std::span<const NamedValue<ScoreFunc>> namesOf<ScoreFunc>();
template <> std::span<const NamedValue<RoundingMode>> namesOf<RoundingMode>();
template <> std::span<const NamedValue<WarpgroupMode>> namesOf<WarpgroupMode>();
template <> std::span<const NamedValue<Raster>> namesOf<Raster>();
template <> std::span<const NamedValue<StoreMode>> namesOf<StoreMode>();
template <> std::span<const NamedValue<GemmKind>> namesOf<GemmKind>();

template <typename Enum> std::optional<Enum> parseName(std::string_view name) {
  for (const auto &entry : namesOf<Enum>())
    if (entry.name == name)
      return entry.value;
  return std::nullopt;
}

// "a | b | c", for hints that list the valid values.
template <typename Enum> std::string listNames() {
  std::string out;
  for (const auto &entry : namesOf<Enum>()) {
    if (!out.empty())
      out += " | ";
    out += entry.name;
  }
  return out;
}

// [A-Za-z_][A-Za-z0-9_]*: layer names must be identifiers so that the
// canonical print parses back.
bool isIdentifier(std::string_view text);

} // namespace moejit
