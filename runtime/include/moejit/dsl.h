// The .moe language: parse, check, print, serialise.
#pragma once

#include "moejit/diagnostics.h"
#include "moejit/spec.h"

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace moejit {

// Schedules chosen elsewhere, e.g. measured by `moejit tune` (a tuning
// database, autotune/tuning_db.h), that replace defaultSchedule() for the
// GEMMs whose schedule a spec leaves open. A schedule the checks reject for
// the layer is ignored (the default applies).
class ScheduleSource {
public:
  virtual ~ScheduleSource() = default;
  virtual std::optional<Schedule> find(const LayerSpec &layer, GemmKind kind,
                                       const Target &target) const = 0;
};

// Parses and checks `text` for `target`. On any error returns nullopt and the
// diagnostics (all of them, located) are in `diags`. A GEMM without schedule
// fields (and each GEMM of a layer that lists none) takes `tuned`'s schedule
// when it has one, else the default; fields that are given patch the default.
std::optional<Spec> parseSpec(std::string_view text, std::string_view filename,
                              const Target &target, Diagnostics &diags,
                              const ScheduleSource *tuned = nullptr);

// The AST of `text` as an indented tree (for --emit=ast); nullopt on a syntax
// error, with diagnostics.
std::optional<std::string> dumpAst(std::string_view text, std::string_view filename,
                                   Diagnostics &diags);

// Fills the missing schedule fields with defaultSchedule() and the default
// GEMM set, then checks the spec for `target`. Diagnostics carry field paths
// (no source locations) for specs built in C++. A default-constructed
// schedule (and the schedules of the default GEMM set) takes `tuned`'s
// schedule when it has one.
bool resolveSpec(Spec &spec, const Target &target, Diagnostics &diags,
                 const ScheduleSource *tuned = nullptr);

// The schedule heuristic: a pure function of the layer, the GEMM and the target.
Schedule defaultSchedule(const LayerSpec &layer, GemmKind kind, const Target &target);
Schedule applyPatch(const Schedule &base, const SchedulePatch &patch);

// Canonical DSL text: every field explicit, fixed order. parse(print(s)) == s.
std::string printSpec(const Spec &spec);

// Canonical JSON and the stable content hash (hex, 32 chars, XXH3-128 of the
// canonical JSON dump).
nlohmann::json toJson(const Spec &spec);
nlohmann::json toJson(const LayerSpec &layer);
nlohmann::json toJson(const GemmSpec &gemm);
std::string contentHash(const nlohmann::json &canonical);
std::string specHash(const LayerSpec &layer);

} // namespace moejit
