#include "autotune/tuning_db.h"

#include "moejit/error.h"
#include "moejit/knobs.h"
#include "moejit/problem.h"
#include "runtime/cache/cache_key.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "runtime/cache/posix_file.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <unistd.h>

namespace moejit {
namespace {

using json = nlohmann::json;

constexpr int kFormat = 1;

json scheduleJson(const Schedule &s) {
  return toJson(GemmSpec{GemmKind::UpProj, s}).at("schedule");
}

// The problem fields of the key: the schedule and the kernel name removed.
json problemFields(const LayerSpec &layer, GemmKind kind) {
  json problem = toJson(makeGemmProblem(layer, GemmSpec{kind, Schedule{}}));
  problem.erase("schedule");
  problem.erase("kernel_name");
  return problem;
}

// The key of an entry: its problem fields, arch and SM count, hashed.
std::string keyOf(const json &problem, const std::string &arch, int smCount) {
  return contentHash(json{{"problem", problem}, {"arch", arch}, {"sm_count", smCount}});
}

// Reads entry fields, naming the entry and field in every error.
class EntryReader {
public:
  EntryReader(const json &entry, std::string where) : entry_(entry), where_(std::move(where)) {}

  const json &field(const char *name) const {
    if (!entry_.contains(name))
      fail(fmt::format("has no \"{}\"", name));
    return entry_.at(name);
  }
  std::string text(const char *name) const {
    const json &v = field(name);
    if (!v.is_string())
      fail(fmt::format("\"{}\" is not a string", name));
    return v.get<std::string>();
  }
  int64_t integer(const json &v, const std::string &name) const {
    if (!v.is_number_integer())
      fail(fmt::format("\"{}\" is not an integer", name));
    return v.get<int64_t>();
  }
  int64_t integer(const char *name) const { return integer(field(name), name); }
  double number(const char *name) const {
    const json &v = field(name);
    if (!v.is_number())
      fail(fmt::format("\"{}\" is not a number", name));
    return v.get<double>();
  }
  int small(const json &object, const char *name, const std::string &path) const {
    if (!object.is_object() || !object.contains(name))
      fail(fmt::format("has no \"{}.{}\"", path, name));
    const int64_t v = integer(object.at(name), path + "." + name);
    if (v < 0 || v > 4096)
      fail(fmt::format("\"{}.{}\" = {} is out of range", path, name, v));
    return static_cast<int>(v);
  }
  Schedule schedule() const {
    const json &s = field("schedule");
    if (!s.is_object())
      fail("\"schedule\" is not an object");
    Schedule out;
    out.tile = {small(s.value("tile", json()), "m", "schedule.tile"),
                small(s.value("tile", json()), "n", "schedule.tile"),
                small(s.value("tile", json()), "k", "schedule.tile")};
    out.stages = small(s, "stages", "schedule");
    out.cluster = {small(s.value("cluster", json()), "m", "schedule.cluster"),
                   small(s.value("cluster", json()), "n", "schedule.cluster")};
    auto name = [&](const char *key) {
      if (!s.contains(key) || !s.at(key).is_string())
        fail(fmt::format("\"schedule.{}\" is missing or not a string", key));
      return s.at(key).get<std::string>();
    };
    const std::string warpgroups = name("warpgroups");
    const std::optional<WarpgroupMode> mode = parseWarpgroupMode(warpgroups);
    if (!mode)
      fail(fmt::format("\"schedule.warpgroups\" = \"{}\" is not a warpgroup mode", warpgroups));
    out.warpgroups = *mode;
    const std::string raster = name("raster");
    const std::optional<Raster> order = parseRaster(raster);
    if (!order)
      fail(fmt::format("\"schedule.raster\" = \"{}\" is not a raster order", raster));
    out.raster = *order;
    if (!s.contains("persistent") || !s.at("persistent").is_boolean())
      fail("\"schedule.persistent\" is missing or not a boolean");
    out.persistent = s.at("persistent").get<bool>();
    // Databases written before the field existed hold direct stores.
    if (s.contains("stores")) {
      const std::string stores = name("stores");
      const std::optional<StoreMode> mode = parseStoreMode(stores);
      if (!mode)
        fail(fmt::format("\"schedule.stores\" = \"{}\" is not a store mode", stores));
      out.stores = *mode;
    }
    return out;
  }

  [[noreturn]] void fail(const std::string &what) const { throw Error(where_ + " " + what); }

private:
  const json &entry_;
  std::string where_;
};

} // namespace

std::string tuningKey(const LayerSpec &layer, GemmKind kind, const Target &target) {
  return keyOf(problemFields(layer, kind), target.arch, target.smCount);
}

TunedSchedule tunedScheduleFor(const LayerSpec &layer, GemmKind kind, const Target &target) {
  TunedSchedule entry;
  entry.key = tuningKey(layer, kind, target);
  entry.kind = kind;
  entry.problemJson = problemFields(layer, kind).dump();
  entry.arch = target.arch;
  entry.smCount = target.smCount;
  entry.layer = layer.name;
  return entry;
}

TuningDb TuningDb::parse(std::string_view text, const std::string &origin) {
  try {
    return parseChecked(text, origin);
  } catch (const json::exception &e) {
    // A field of an unexpected type deep in an entry.
    throw Error(fmt::format("{}: not a tuning database: {}", origin, e.what()));
  }
}

TuningDb TuningDb::parseChecked(std::string_view text, const std::string &origin) {
  json document;
  try {
    document = json::parse(text);
  } catch (const json::parse_error &e) {
    throw Error(fmt::format("{}: not a tuning database: {}", origin, e.what()));
  }
  if (!document.is_object() || !document.contains("format") || !document.contains("entries"))
    throw Error(origin + ": not a tuning database: expected an object with \"format\" and "
                         "\"entries\"");
  if (!document.at("format").is_number_integer() || document.at("format").get<int>() != kFormat)
    throw Error(fmt::format("{}: tuning database format {} is not the {} this moejit reads; run "
                            "`moejit tune` again",
                            origin, document.at("format").dump(), kFormat));
  const json &entries = document.at("entries");
  if (!entries.is_array())
    throw Error(origin + ": \"entries\" is not an array");
  TuningDb db;
  for (size_t i = 0; i < entries.size(); ++i) {
    const EntryReader read(entries[i], fmt::format("{}: entry {}", origin, i));
    if (!entries[i].is_object())
      read.fail("is not an object");
    TunedSchedule entry;
    entry.key = read.text("key");
    const std::string gemm = read.text("gemm");
    const std::optional<GemmKind> kind = parseGemmKind(gemm);
    if (!kind)
      read.fail(fmt::format("\"gemm\" = \"{}\" is not a grouped GEMM", gemm));
    entry.kind = *kind;
    entry.problemJson = read.field("problem").dump();
    entry.arch = read.text("arch");
    entry.smCount = static_cast<int>(read.integer("sm_count"));
    entry.schedule = read.schedule();
    entry.tflops = read.number("tflops");
    entry.defaultTflops = read.number("default_tflops");
    entry.tokens = read.integer("tokens");
    entry.routing = read.text("routing");
    entry.device = read.text("device");
    entry.moejitVersion = read.text("moejit_version");
    entry.layer = read.text("layer");
    if (entries[i].contains("objective")) {
      entry.objective = read.text("objective");
      if (entry.objective != "training" && entry.objective != "inference")
        read.fail(fmt::format("\"objective\" = \"{}\" is not training or inference",
                              entry.objective));
    }
    // The key must be what its fields hash to: an edited entry would
    // otherwise apply to a shape it was not measured on.
    if (keyOf(read.field("problem"), entry.arch, entry.smCount) != entry.key)
      read.fail(fmt::format("\"key\" {} does not match its problem, arch and sm_count", entry.key));
    if (db.entry(entry.key))
      read.fail(fmt::format("repeats key {}", entry.key));
    db.entries_.push_back(std::move(entry));
  }
  return db;
}

TuningDb tuningDbOfKnobs(const Knobs &knobs) {
  return knobs.tuningDb.empty() ? TuningDb() : TuningDb::load(knobs.tuningDb);
}

TuningDb TuningDb::load(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (access(path.c_str(), F_OK) != 0 && errno == ENOENT)
      return TuningDb();
    throw Error(fmt::format("{}: cannot read the tuning database: {}", path, std::strerror(errno)));
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad())
    throw Error(path + ": cannot read the tuning database");
  return parse(text.str(), path);
}

std::string TuningDb::dump() const {
  std::vector<const TunedSchedule *> sorted;
  for (const TunedSchedule &e : entries_)
    sorted.push_back(&e);
  std::sort(sorted.begin(), sorted.end(),
            [](const TunedSchedule *a, const TunedSchedule *b) { return a->key < b->key; });
  json entries = json::array();
  for (const TunedSchedule *e : sorted) {
    json entry = json::object();
    entry["key"] = e->key;
    entry["gemm"] = std::string(toString(e->kind));
    entry["problem"] = json::parse(e->problemJson);
    entry["arch"] = e->arch;
    entry["sm_count"] = e->smCount;
    entry["schedule"] = scheduleJson(e->schedule);
    entry["tflops"] = e->tflops;
    entry["default_tflops"] = e->defaultTflops;
    entry["tokens"] = e->tokens;
    entry["routing"] = e->routing;
    entry["device"] = e->device;
    entry["moejit_version"] = e->moejitVersion;
    entry["layer"] = e->layer;
    entry["objective"] = e->objective;
    entries.push_back(std::move(entry));
  }
  return json{{"format", kFormat}, {"entries", std::move(entries)}}.dump(2) + "\n";
}

void TuningDb::save(const std::string &path) const {
  using namespace cache_detail;
  // Through a symbolic link to the file it names; the file keeps its mode.
  std::error_code ignored;
  const std::string target = std::filesystem::is_symlink(path, ignored)
                                 ? std::filesystem::weakly_canonical(path, ignored).string()
                                 : path;
  struct stat existing {};
  const mode_t mode = ::stat(target.c_str(), &existing) == 0 ? existing.st_mode & 07777 : 0644;
  const std::string temp = fmt::format("{}.tmp.{}", target, getpid());
  UniqueFd fd(::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode));
  if (!fd)
    throw Error(fmt::format("{}: cannot write the tuning database: {}", temp, errnoText(errno)));
  if (!writeAll(fd.get(), dump()) || ::fchmod(fd.get(), mode) != 0 || ::fsync(fd.get()) != 0 ||
      !fd.close()) {
    const std::string why = errnoText(errno);
    std::remove(temp.c_str());
    throw Error(fmt::format("{}: cannot write the tuning database: {}", temp, why));
  }
  if (std::rename(temp.c_str(), target.c_str()) != 0) {
    const std::string why = errnoText(errno);
    std::remove(temp.c_str());
    throw Error(fmt::format("{}: cannot replace the tuning database: {}", target, why));
  }
  const std::string directory = std::filesystem::path(target).parent_path().string();
  syncDirectory(directory.empty() ? "." : directory);
}

void TuningDb::update(const std::string &path, TunedSchedule entry) {
  const std::string lockPath = path + ".lock";
  {
    std::string error;
    std::optional<cache_detail::FileLock> lock = cache_detail::FileLock::acquire(lockPath, error);
    if (!lock)
      throw Error(fmt::format("{}: cannot lock the tuning database: {}", lockPath, error));
    TuningDb current = load(path);
    current.put(std::move(entry));
    current.save(path);
  }
  // Unless another tuner holds it meanwhile (FileLock copes with both).
  cache_detail::removeLockFile(lockPath);
}

std::optional<Schedule> TuningDb::find(const LayerSpec &layer, GemmKind kind,
                                       const Target &target) const {
  if (const TunedSchedule *e = entry(tuningKey(layer, kind, target)))
    return e->schedule;
  return std::nullopt;
}

const TunedSchedule *TuningDb::entry(const std::string &key) const {
  for (const TunedSchedule &e : entries_)
    if (e.key == key)
      return &e;
  return nullptr;
}

void TuningDb::put(TunedSchedule entry) {
  for (TunedSchedule &e : entries_)
    if (e.key == entry.key) {
      e = std::move(entry);
      return;
    }
  entries_.push_back(std::move(entry));
}

} // namespace moejit
