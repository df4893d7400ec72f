// The tuning database: the schedule `moejit tune` measured fastest on a GPU
// for each GEMM shape and target, kept as one JSON file (docs/tuning.md).
// A spec read with it (parseSpec / resolveSpec with the database as the
// ScheduleSource, MOEJIT_TUNING_DB for the runtime and the CLI) gives those
// schedules to the GEMMs whose schedule it leaves open.
//
//   {"format": 1, "entries": [
//     {"key": "<32 hex>", "gemm": "down_proj", "problem": {...}, "arch": "sm_90a",
//      "sm_count": 132, "schedule": {"tile": {"m": 128, "n": 256, "k": 64}, ...},
//      "tflops": 451.2, "default_tflops": 447.0, "tokens": 32768,
//      "routing": "uniform", "device": "NVIDIA H100 80GB HBM3",
//      "moejit_version": "0.1.0", "layer": "sonicmoe_7b"}]}
#pragma once

#include "moejit/dsl.h"
#include "moejit/spec.h"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace moejit {

// What the key covers: the GEMM as the kernels see it without its schedule
// (kind, dtype, extents, storage, epilogue; makeGemmProblem of the layer),
// the arch and the SM count. Token counts and the layer's name are not in
// it: two layers of the same shape share their tuned schedules.
std::string tuningKey(const LayerSpec &layer, GemmKind kind, const Target &target);

struct TunedSchedule {
  std::string key; // tuningKey
  GemmKind kind = GemmKind::UpProj;
  std::string problemJson; // the key's problem fields, canonical JSON (for reading)
  std::string arch;
  int smCount = 0;
  Schedule schedule;
  // What the measurement saw: TFLOP/s of the schedule and of the default.
  double tflops = 0, defaultTflops = 0;
  int64_t tokens = 0;
  std::string routing, device, moejitVersion, layer;
  // What was timed: "training" (up_proj writes H too) or "inference"
  // (act(H) only). Optional in the file; "training" when absent.
  std::string objective = "training";
};

// An entry for the GEMM with its key fields (key, kind, problem, arch, SM
// count) filled in; the caller adds the schedule and what it measured.
TunedSchedule tunedScheduleFor(const LayerSpec &layer, GemmKind kind, const Target &target);

class TuningDb;
struct Knobs;
// The database MOEJIT_TUNING_DB names (empty without the knob); throws Error
// as TuningDb::load.
TuningDb tuningDbOfKnobs(const Knobs &knobs);

class TuningDb final : public ScheduleSource {
public:
  // An empty database when `path` does not exist; throws Error naming the
  // file and what is wrong when it cannot be read or is not a database.
  static TuningDb load(const std::string &path);
  // The same for text already read; `origin` names it in errors.
  static TuningDb parse(std::string_view text, const std::string &origin);

  // Canonical JSON text (entries sorted by key).
  std::string dump() const;
  // Writes dump() to a temporary file beside `path` (through a symbolic
  // link, to the file it names), syncs it and renames it over `path`, so a
  // reader never sees half a file; the file keeps its mode. Throws Error.
  void save(const std::string &path) const;
  // Adds `entry` to the database at `path` under an exclusive lock (`path`
  // + ".lock", removed afterwards unless another tuner holds it), reading
  // the file again first, so concurrent tuners keep each other's entries.
  // Throws Error.
  static void update(const std::string &path, TunedSchedule entry);

  std::optional<Schedule> find(const LayerSpec &layer, GemmKind kind,
                               const Target &target) const override;
  const TunedSchedule *entry(const std::string &key) const;
  // Adds the entry, replacing one of the same key.
  void put(TunedSchedule entry);
  const std::vector<TunedSchedule> &entries() const { return entries_; }

private:
  static TuningDb parseChecked(std::string_view text, const std::string &origin);
  std::vector<TunedSchedule> entries_;
};

} // namespace moejit
