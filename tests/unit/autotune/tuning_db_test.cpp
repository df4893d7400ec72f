// The tuning database: keys, the JSON file (round trip, atomic save, every
// malformed input a located error) and specs that take its schedules.
#include "autotune/tuning_db.h"
#include "moejit/error.h"

#include "../schedule/test_layers.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <random>
#include <sys/stat.h>
#include <unistd.h>

namespace moejit {
namespace {

using testing::qwen3;
using testing::sonic7b;

TunedSchedule tuned(const LayerSpec &layer, GemmKind kind, const Target &target, Schedule s) {
  TunedSchedule entry = tunedScheduleFor(layer, kind, target);
  entry.schedule = s;
  entry.tflops = 500;
  entry.defaultTflops = 480;
  entry.tokens = 32768;
  entry.routing = "uniform";
  entry.device = "test";
  entry.moejitVersion = "0.1.0";
  return entry;
}

Schedule pingPong64() {
  Schedule s;
  s.tile = {64, 256, 64};
  s.stages = 5;
  s.warpgroups = WarpgroupMode::PingPong;
  s.raster = Raster::AlongN;
  return s;
}

TEST(TuningKey, CoversShapeArchAndSmsButNotTheLayerName) {
  const Target h100 = Target::fromArch("sm_90a");
  LayerSpec renamed = sonic7b();
  renamed.name = "other";
  EXPECT_EQ(tuningKey(sonic7b(), GemmKind::UpProj, h100), tuningKey(renamed, GemmKind::UpProj, h100));
  EXPECT_NE(tuningKey(sonic7b(), GemmKind::UpProj, h100),
            tuningKey(sonic7b(), GemmKind::DownProj, h100));
  EXPECT_NE(tuningKey(sonic7b(), GemmKind::UpProj, h100), tuningKey(qwen3(), GemmKind::UpProj, h100));
  Target fewer = h100;
  fewer.smCount = 114;
  EXPECT_NE(tuningKey(sonic7b(), GemmKind::UpProj, h100), tuningKey(sonic7b(), GemmKind::UpProj, fewer));
  EXPECT_NE(tuningKey(sonic7b(), GemmKind::UpProj, h100),
            tuningKey(sonic7b(), GemmKind::UpProj, Target::fromArch("sm_90")));
}

class TuningDbFile : public ::testing::Test {
protected:
  void SetUp() override {
    std::random_device random;
    dir_ = std::filesystem::temp_directory_path() / ("moejit-tuning-" + std::to_string(random()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
  std::string path(const char *name) const { return (dir_ / name).string(); }
  void write(const std::string &file, const std::string &text) const {
    std::ofstream(file, std::ios::binary) << text;
  }
  std::filesystem::path dir_;
};

TEST_F(TuningDbFile, MissingFileIsEmptySavedFileRoundTrips) {
  EXPECT_TRUE(TuningDb::load(path("absent.json")).entries().empty());
  const Target target = Target::fromArch("sm_90a");
  TuningDb db;
  db.put(tuned(sonic7b(), GemmKind::DownProj, target, pingPong64()));
  TunedSchedule up = tuned(sonic7b(), GemmKind::UpProj, target, pingPong64());
  db.put(up);
  up.tflops = 510;
  up.objective = "inference";
  db.put(up); // the same key: replaced
  ASSERT_EQ(db.entries().size(), 2u);
  db.save(path("db.json"));
  EXPECT_FALSE(std::filesystem::exists(path("db.json") + ".tmp." + std::to_string(getpid())));

  const TuningDb loaded = TuningDb::load(path("db.json"));
  ASSERT_EQ(loaded.entries().size(), 2u);
  const TunedSchedule *back = loaded.entry(up.key);
  ASSERT_NE(back, nullptr);
  EXPECT_EQ(back->schedule, pingPong64());
  EXPECT_EQ(back->tflops, 510);
  EXPECT_EQ(back->kind, GemmKind::UpProj);
  EXPECT_EQ(back->layer, "sonic7b");
  EXPECT_EQ(back->objective, "inference");
  EXPECT_EQ(loaded.dump(), db.dump());
  EXPECT_EQ(loaded.find(sonic7b(), GemmKind::DownProj, target), pingPong64());
  EXPECT_FALSE(loaded.find(qwen3(), GemmKind::DownProj, target));
  EXPECT_FALSE(loaded.find(sonic7b(), GemmKind::DownProj, Target::fromArch("sm_90")));
}

TEST_F(TuningDbFile, StoreModeRoundTripsAndOlderFilesMeanDirectStores) {
  const Target target = Target::fromArch("sm_90a");
  Schedule tma = pingPong64();
  tma.warpgroups = WarpgroupMode::Cooperative;
  tma.tile = {128, 256, 64};
  tma.stages = 4;
  tma.stores = StoreMode::Tma;
  TuningDb db;
  db.put(tuned(sonic7b(), GemmKind::DownProj, target, tma));
  db.save(path("db.json"));
  EXPECT_EQ(TuningDb::load(path("db.json")).find(sonic7b(), GemmKind::DownProj, target), tma);

  // A database written before `stores` existed: its schedules store directly.
  nlohmann::json json = nlohmann::json::parse(db.dump());
  json["entries"][0]["schedule"].erase("stores");
  write(path("old.json"), json.dump());
  Schedule direct = tma;
  direct.stores = StoreMode::Direct;
  EXPECT_EQ(TuningDb::load(path("old.json")).find(sonic7b(), GemmKind::DownProj, target), direct);
}

TEST_F(TuningDbFile, UpdatesKeepOtherEntriesTheModeAndTheLink) {
  const Target target = Target::fromArch("sm_90a");
  const std::string real = path("real.json");
  const std::string link = path("link.json");
  TuningDb::update(real, tuned(sonic7b(), GemmKind::UpProj, target, pingPong64()));
  ASSERT_EQ(::chmod(real.c_str(), 0640), 0);
  std::filesystem::create_symlink(real, link);
  // Another tuner's update through the link: both entries stay, the link
  // stays a link, the file keeps its mode.
  TuningDb::update(link, tuned(sonic7b(), GemmKind::DownProj, target, pingPong64()));
  EXPECT_TRUE(std::filesystem::is_symlink(link));
  EXPECT_EQ(TuningDb::load(real).entries().size(), 2u);
  struct stat info {};
  ASSERT_EQ(::stat(real.c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0640u);
  EXPECT_FALSE(std::filesystem::exists(link + ".lock"));
}

TEST_F(TuningDbFile, EntriesThatDoNotHashToTheirKeyAreRefused) {
  // put() keeps whatever problem JSON it is given; parse() checks the key
  // against the problem, arch and sm_count, so a hand-edited shape fails.
  const std::string text = R"({"format": 1, "entries": [{"key": "0123", "gemm": "down_proj",
    "problem": {"n": 1}, "arch": "sm_90a", "sm_count": 132,
    "schedule": {"tile": {"m": 64, "n": 256, "k": 64}, "stages": 5, "cluster": {"m": 1, "n": 1},
                 "warpgroups": "pingpong", "raster": "along_n", "persistent": false},
    "tflops": 1.0, "default_tflops": 1.0, "tokens": 1, "routing": "uniform", "device": "x",
    "moejit_version": "0.1.0", "layer": "l"}]})";
  write(path("db.json"), text);
  try {
    TuningDb::load(path("db.json"));
    FAIL() << "accepted a key that does not match";
  } catch (const Error &e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(path("db.json") + ": entry 0"), std::string::npos) << what;
    EXPECT_NE(what.find("does not match"), std::string::npos) << what;
  }
}

struct BadDb {
  const char *name;
  std::string text;
  const char *expected; // part of the message
};

TEST_F(TuningDbFile, MalformedFilesAreLocatedErrors) {
  const std::string schedule =
      R"("schedule": {"tile": {"m": 64, "n": 256, "k": 64}, "stages": 5, "cluster": {"m": 1, "n": 1}, "warpgroups": "pingpong", "raster": "along_n", "persistent": false})";
  const std::vector<BadDb> cases = {
      {"empty", "", "not a tuning database"},
      {"truncated", R"({"format": 1, "entries": [)", "not a tuning database"},
      {"not an object", "[1, 2]", "expected an object"},
      {"other format", R"({"format": 2, "entries": []})", "format 2"},
      {"entries not an array", R"({"format": 1, "entries": {}})", "not an array"},
      {"entry not an object", R"({"format": 1, "entries": [3]})", "entry 0 is not an object"},
      {"missing key", R"({"format": 1, "entries": [{"gemm": "up_proj"}]})", "has no \"key\""},
      {"unknown gemm", R"({"format": 1, "entries": [{"key": "k", "gemm": "side_proj"}]})",
       "\"gemm\" = \"side_proj\""},
      {"bad warpgroups",
       R"({"format": 1, "entries": [{"key": "k", "gemm": "up_proj", "problem": {}, "arch": "sm_90a", "sm_count": 132, "schedule": {"tile": {"m": 64, "n": 256, "k": 64}, "stages": 5, "cluster": {"m": 1, "n": 1}, "warpgroups": "threeway", "raster": "along_n", "persistent": false}}]})",
       "\"schedule.warpgroups\" = \"threeway\""},
      {"bad stores",
       R"({"format": 1, "entries": [{"key": "k", "gemm": "up_proj", "problem": {}, "arch": "sm_90a", "sm_count": 132, "schedule": {"tile": {"m": 64, "n": 256, "k": 64}, "stages": 5, "cluster": {"m": 1, "n": 1}, "warpgroups": "pingpong", "raster": "along_n", "persistent": false, "stores": "carrier"}}]})",
       "\"schedule.stores\" = \"carrier\" is not a store mode"},
      {"negative stages",
       R"({"format": 1, "entries": [{"key": "k", "gemm": "up_proj", "problem": {}, "arch": "sm_90a", "sm_count": 132, "schedule": {"tile": {"m": 64, "n": 256, "k": 64}, "stages": -1, "cluster": {"m": 1, "n": 1}, "warpgroups": "pingpong", "raster": "along_n", "persistent": false}}]})",
       "\"schedule.stages\" = -1 is out of range"},
      {"schedule null",
       R"({"format": 1, "entries": [{"key": "k", "gemm": "up_proj", "problem": {}, "arch": "sm_90a", "sm_count": 132, "schedule": null}]})",
       "\"schedule\" is not an object"},
      {"unknown objective",
       R"({"format": 1, "entries": [{"key": "k", "gemm": "up_proj", "problem": {}, "arch": "sm_90a", "sm_count": 132, )" +
           schedule +
           R"(, "tflops": 1, "default_tflops": 1, "tokens": 1, "routing": "u", "device": "d", "moejit_version": "v", "layer": "l", "objective": "speed"}]})",
       "\"objective\" = \"speed\""},
      {"tflops a string",
       R"({"format": 1, "entries": [{"key": "k", "gemm": "up_proj", "problem": {}, "arch": "sm_90a", "sm_count": 132, )" +
           schedule + R"(, "tflops": "fast"}]})",
       "\"tflops\" is not a number"},
  };
  for (const BadDb &bad : cases) {
    write(path("bad.json"), bad.text);
    try {
      TuningDb::load(path("bad.json"));
      ADD_FAILURE() << bad.name << ": accepted";
    } catch (const Error &e) {
      const std::string what = e.what();
      EXPECT_NE(what.find(path("bad.json")), std::string::npos) << bad.name << ": " << what;
      EXPECT_NE(what.find(bad.expected), std::string::npos) << bad.name << ": " << what;
    }
  }
  // A directory in the way is an error too, not an empty database.
  EXPECT_THROW(TuningDb::load(dir_.string()), Error);
}

} // namespace
} // namespace moejit
