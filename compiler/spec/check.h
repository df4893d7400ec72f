// The semantic checks of a Spec, shared by the DSL front end and specs built
// in C++. Diagnostics carry field paths ("qwen.gemm.up_proj.tile.m"); the
// DSL front end turns them into source locations.
#pragma once

#include "moejit/diagnostics.h"
#include "moejit/spec.h"

#include <cstddef>
#include <string>

namespace moejit {

// Documented limits (docs/dsl.md).
inline constexpr int kMaxExperts = 1024;
inline constexpr int kMaxTopK = 32;
inline constexpr int kMinStages = 2; // a stage loads while another computes
inline constexpr int kMaxStages = 8;
inline constexpr int kMaxClusterBlocks = 8;
inline constexpr int kMaxTileDim = 256;
// Rows of every operand must be 16-byte multiples for the vector copies.
inline constexpr int kElementAlignment = 8;
inline constexpr int kRoundingTileMultiple = 16;
// fp32 accumulators per thread of the portable path (its op verifier's limit).
inline constexpr int kMaxPortableAccumulators = 128;
inline constexpr int kWarpThreads = 32;

// The path of a layer: its name, with "#k" for the k-th layer of that name
// (k >= 2), so duplicates keep distinct paths.
std::string layerPath(const Spec &spec, std::size_t layerIndex);
// "<layer>.gemm.<kind>", with "#k" for the k-th GEMM of that kind.
std::string gemmPath(const Spec &spec, std::size_t layerIndex, std::size_t gemmIndex);

class ScheduleSource;
// Whether the checks accept `schedule` for the GEMM `kind` of `layer`.
bool scheduleAccepted(const LayerSpec &layer, GemmKind kind, const Target &target,
                      const Schedule &schedule);
// The schedule of a GEMM the spec leaves open: `tuned`'s when it has one that
// the checks accept for this layer, else defaultSchedule().
Schedule openSchedule(const LayerSpec &layer, GemmKind kind, const Target &target,
                      const ScheduleSource *tuned);
// Gives a layer without GEMMs the standard set, each with openSchedule().
void addStandardGemms(LayerSpec &layer, const Target &target,
                      const ScheduleSource *tuned = nullptr);
// Orders the GEMMs by kind (stable, so duplicates keep their order).
void sortGemms(LayerSpec &layer);

// Reports every problem of `spec` for `target`; true when there is none.
bool checkSpec(const Spec &spec, const Target &target, Diagnostics &diags);

} // namespace moejit
