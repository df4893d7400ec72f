// The schedule search on the CPU: neighbours are valid and distinct, the
// local search climbs a synthetic objective, respects its budget, keeps
// failures out, and specs take tuned schedules only where they are open.
#include "autotune/search.h"
#include "autotune/tuning_db.h"
#include "moejit/dsl.h"
#include "moejit/problem.h"

#include "../schedule/test_layers.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>

namespace moejit {
namespace {

using testing::sonic7b;

const Target kH100 = Target::fromArch("sm_90a");

bool contains(const std::vector<Schedule> &list, const std::function<bool(const Schedule &)> &p) {
  return std::any_of(list.begin(), list.end(), p);
}

TEST(ScheduleNeighbours, HopperChoicesAreValidDistinctAndReal) {
  const LayerSpec layer = sonic7b();
  const Schedule center = defaultSchedule(layer, GemmKind::DownProj, kH100);
  const std::vector<Schedule> next = scheduleNeighbours(layer, GemmKind::DownProj, kH100, center);
  ASSERT_FALSE(next.empty());
  for (size_t i = 0; i < next.size(); ++i) {
    EXPECT_FALSE(next[i] == center);
    EXPECT_TRUE(scheduleAccepted(layer, GemmKind::DownProj, kH100, next[i]));
    for (size_t j = i + 1; j < next.size(); ++j)
      EXPECT_FALSE(next[i] == next[j]) << i << " and " << j;
  }
  EXPECT_TRUE(contains(next, [](const Schedule &s) { return s.stages == 3; }));
  EXPECT_TRUE(contains(next, [](const Schedule &s) { return s.warpgroups == WarpgroupMode::Staggered; }));
  EXPECT_TRUE(contains(next, [](const Schedule &s) { return s.cluster.m == 2; }));
  EXPECT_TRUE(contains(next, [](const Schedule &s) { return s.tile.m == 64; }));
  // 128 x 256 cannot ping-pong (its accumulators do not fit one warpgroup):
  // that schedule would run cooperatively, the same kernel as the center.
  EXPECT_FALSE(contains(next, [](const Schedule &s) {
    return s.warpgroups == WarpgroupMode::PingPong && s.tile.m == 128 && s.tile.n == 256;
  }));
  // The Hopper path fixes tile.k at one 128-byte row; persistence is implied.
  EXPECT_FALSE(contains(next, [&](const Schedule &s) { return s.tile.k != center.tile.k; }));
  EXPECT_FALSE(contains(next, [&](const Schedule &s) { return s.persistent != center.persistent; }));
}

// The portable path takes K, but no warpgroup mode, cluster or raster, and
// `persistent` changes no kernel: no neighbour differs only in those.
TEST(ScheduleNeighbours, PortableChoicesVaryTheTileAndStagesOnly) {
  const Target ampere = Target::fromArch("sm_80");
  const LayerSpec layer = sonic7b();
  const Schedule center = defaultSchedule(layer, GemmKind::DownProj, ampere);
  const std::vector<Schedule> next = scheduleNeighbours(layer, GemmKind::DownProj, ampere, center);
  EXPECT_TRUE(contains(next, [&](const Schedule &s) { return s.tile.k != center.tile.k; }));
  EXPECT_TRUE(contains(next, [&](const Schedule &s) { return s.stages != center.stages; }));
  EXPECT_FALSE(contains(next, [&](const Schedule &s) { return s.persistent != center.persistent; }));
  EXPECT_FALSE(contains(next, [&](const Schedule &s) { return s.raster != center.raster; }));
  EXPECT_FALSE(contains(next, [](const Schedule &s) { return s.warpgroups != WarpgroupMode::Cooperative; }));
  EXPECT_FALSE(contains(next, [](const Schedule &s) { return s.cluster.m != 1; }));
}

// A synthetic objective: 3 stages +10%, staggered +20%, bands -5%; 64-wide
// tiles fail (as a kernel that fails its check would).
std::vector<Measurement> measure(const std::vector<Schedule> &batch, int &calls) {
  ++calls;
  std::vector<Measurement> out;
  for (const Schedule &s : batch) {
    Measurement m;
    if (s.tile.n == 64) {
      m.failure = "check failed";
    } else {
      double t = 100;
      t *= s.stages == 3 ? 1.10 : 1.0;
      t *= s.warpgroups == WarpgroupMode::Staggered ? 1.20 : 1.0;
      t *= s.raster == Raster::AlongM ? 0.95 : 1.0;
      m.tflops = t;
    }
    out.push_back(m);
  }
  return out;
}

TEST(SearchSchedules, ClimbsToTheBestCombinationInRounds) {
  const LayerSpec layer = sonic7b();
  const Schedule start = defaultSchedule(layer, GemmKind::DownProj, kH100);
  ASSERT_EQ(start.stages, 4);
  int calls = 0;
  const SearchResult result = searchSchedules(
      layer, GemmKind::DownProj, kH100, start,
      [&](const std::vector<Schedule> &batch) { return measure(batch, calls); },
      SearchOptions{.budget = 200, .confirmRuns = 0});
  EXPECT_EQ(result.best.warpgroups, WarpgroupMode::Staggered);
  EXPECT_EQ(result.best.stages, 3);
  EXPECT_NEAR(result.bestTflops, 132, 1e-9);
  EXPECT_NEAR(result.startTflops, 100, 1e-9);
  EXPECT_GE(calls, 2); // one field per round: the second round combines them
  EXPECT_TRUE(std::any_of(result.measured.begin(), result.measured.end(),
                          [](const Measurement &m) { return !m.tflops && !m.failure.empty(); }));
  for (size_t i = 0; i < result.measured.size(); ++i)
    for (size_t j = i + 1; j < result.measured.size(); ++j)
      EXPECT_FALSE(result.measured[i].schedule == result.measured[j].schedule);
}

TEST(SearchSchedules, KeepsToItsBudgetAndTheStartWithoutAGain) {
  const LayerSpec layer = sonic7b();
  const Schedule start = defaultSchedule(layer, GemmKind::DownProj, kH100);
  int calls = 0;
  SearchResult result = searchSchedules(
      layer, GemmKind::DownProj, kH100, start,
      [&](const std::vector<Schedule> &batch) { return measure(batch, calls); },
      SearchOptions{.budget = 3, .confirmRuns = 0});
  EXPECT_EQ(result.measured.size(), 3u);
  EXPECT_EQ(result.measured.front().schedule, start);
  // A flat objective: nothing beats the start by the minimum gain.
  result = searchSchedules(
      layer, GemmKind::DownProj, kH100, start,
      [](const std::vector<Schedule> &batch) {
        std::vector<Measurement> out(batch.size());
        for (size_t i = 0; i < batch.size(); ++i)
          out[i].tflops = 100 + 0.5 * static_cast<double>(i % 2);
        return out;
      },
      SearchOptions{.budget = 200});
  EXPECT_EQ(result.best, start);
}

// One lucky measurement does not win: 3 stages reads 130 the first time and
// 95 after, staggered 110 every time, the rest 100.
TEST(SearchSchedules, RepeatsDecideByMedians) {
  const LayerSpec layer = sonic7b();
  const Schedule start = defaultSchedule(layer, GemmKind::DownProj, kH100);
  std::map<int, int> seen; // per stages, times measured
  const auto noisy = [&](const std::vector<Schedule> &batch) {
    std::vector<Measurement> out(batch.size());
    for (size_t i = 0; i < batch.size(); ++i) {
      const Schedule &s = batch[i];
      double t = 100;
      if (s.warpgroups == WarpgroupMode::Staggered)
        t = 110;
      else if (s.stages == 3 && s.tile == start.tile && s.raster == start.raster &&
               s.cluster == start.cluster)
        t = seen[3]++ == 0 ? 130 : 95;
      out[i].tflops = t;
    }
    return out;
  };
  SearchResult result = searchSchedules(layer, GemmKind::DownProj, kH100, start, noisy,
                                        SearchOptions{.budget = 200, .rounds = 1});
  EXPECT_EQ(result.best.warpgroups, WarpgroupMode::Staggered);
  EXPECT_EQ(result.best.stages, start.stages);
  EXPECT_NEAR(result.bestTflops, 110, 1e-9);
  EXPECT_NEAR(result.startTflops, 100, 1e-9);
  EXPECT_EQ(result.finalists.size(), 4u); // the start and the 3 fastest
  EXPECT_EQ(result.confirmations.size(), 12u); // 3 more runs each
  // Without repeats the lucky reading wins.
  seen.clear();
  result = searchSchedules(layer, GemmKind::DownProj, kH100, start, noisy,
                           SearchOptions{.budget = 200, .rounds = 1, .confirmRuns = 0});
  EXPECT_EQ(result.best.stages, 3);
}

// Of two finalists that beat the start, the faster one wins even when the
// slower one comes first (its search reading was higher): +3% over +2%,
// not the first to clear the bar.
TEST(SearchSchedules, TheFastestConfirmedMedianWins) {
  const LayerSpec layer = sonic7b();
  const Schedule start = defaultSchedule(layer, GemmKind::DownProj, kH100);
  int calls = 0;
  const auto measure = [&](const std::vector<Schedule> &batch) {
    const bool search = calls++ == 0;
    std::vector<Measurement> out(batch.size());
    for (size_t i = 0; i < batch.size(); ++i) {
      const Schedule &s = batch[i];
      out[i].tflops = s.raster != start.raster            ? (search ? 104.0 : 102.0)
                      : s.warpgroups != start.warpgroups ? 103.0
                                                         : 100.0;
    }
    return out;
  };
  const SearchResult result = searchSchedules(layer, GemmKind::DownProj, kH100, start, measure,
                                              SearchOptions{.budget = 200, .rounds = 1});
  EXPECT_NE(result.best.warpgroups, start.warpgroups);
  EXPECT_EQ(result.best.raster, start.raster);
  EXPECT_NEAR(result.bestTflops, 103, 1e-9);
}

// The database as the schedule source of a spec.
TEST(TunedSpecs, OpenSchedulesTakeTheTunedOneGivenFieldsKeepTheDefault) {
  const LayerSpec shape = sonic7b();
  Schedule staggered = defaultSchedule(shape, GemmKind::DownProj, kH100);
  staggered.warpgroups = WarpgroupMode::Staggered;
  staggered.stages = 3;
  Schedule tunedUp = defaultSchedule(shape, GemmKind::UpProj, kH100);
  tunedUp.stages = 3;
  TuningDb db;
  for (auto [kind, schedule] : {std::pair{GemmKind::DownProj, staggered}, {GemmKind::UpProj, tunedUp}}) {
    TunedSchedule entry = tunedScheduleFor(shape, kind, kH100);
    entry.schedule = schedule;
    db.put(entry);
  }
  const char *text = "layer fine {\n  experts = 128; hidden = 1536; intermediate = 256\n"
                     "  router { top_k = 8 }\n  gemm up_proj { raster = along_n }\n"
                     "  gemm down_proj {}\n}\n"
                     "layer all { experts = 128; hidden = 1536; intermediate = 256\n"
                     "  router { top_k = 8 } }\n";
  Diagnostics diags(text);
  const std::optional<Spec> spec = parseSpec(text, "t.moe", kH100, diags, &db);
  ASSERT_TRUE(spec) << diags.render();
  const auto schedule = [&](size_t layer, GemmKind kind) {
    for (const GemmSpec &g : spec->layers[layer].gemms)
      if (g.kind == kind)
        return g.schedule;
    ADD_FAILURE() << "no " << toString(kind);
    return Schedule{};
  };
  EXPECT_EQ(schedule(0, GemmKind::DownProj), staggered);
  // Given fields patch the default, not the tuned schedule.
  Schedule patched = defaultSchedule(shape, GemmKind::UpProj, kH100);
  patched.raster = Raster::AlongN;
  EXPECT_EQ(schedule(0, GemmKind::UpProj), patched);
  // A layer without GEMMs gets the standard set with the tuned schedules.
  EXPECT_EQ(schedule(1, GemmKind::DownProj), staggered);
  EXPECT_EQ(schedule(1, GemmKind::UpProj), tunedUp);
  EXPECT_EQ(schedule(1, GemmKind::DX), defaultSchedule(shape, GemmKind::DX, kH100));

  // C++ specs: a default-constructed schedule is open.
  Spec built;
  built.layers.push_back(shape);
  built.layers.back().gemms = {GemmSpec{GemmKind::DownProj, Schedule{}}};
  Diagnostics none;
  ASSERT_TRUE(resolveSpec(built, kH100, none, &db)) << none.render();
  EXPECT_EQ(built.layers[0].gemms[0].schedule, staggered);
}

TEST(TunedSpecs, ATunedScheduleTheChecksRejectIsIgnored) {
  const LayerSpec shape = sonic7b();
  Schedule tooDeep = defaultSchedule(shape, GemmKind::DownProj, kH100);
  tooDeep.stages = 8; // 8 x 48 KiB of stages do not fit an H100
  ASSERT_FALSE(scheduleAccepted(shape, GemmKind::DownProj, kH100, tooDeep));
  TuningDb db;
  TunedSchedule entry = tunedScheduleFor(shape, GemmKind::DownProj, kH100);
  entry.schedule = tooDeep;
  db.put(entry);
  Spec built;
  built.layers.push_back(shape);
  built.layers.back().gemms = {GemmSpec{GemmKind::DownProj, Schedule{}}};
  Diagnostics diags;
  ASSERT_TRUE(resolveSpec(built, kH100, diags, &db)) << diags.render();
  EXPECT_EQ(built.layers[0].gemms[0].schedule, defaultSchedule(shape, GemmKind::DownProj, kH100));
}

} // namespace
} // namespace moejit
