#include "autotune/search.h"

#include "compiler/spec/check.h"
#include "moejit/problem.h"

#include <algorithm>

namespace moejit {
namespace {

bool onHopperPath(const LayerSpec &layer, GemmKind kind, const Target &target,
                  const Schedule &schedule) {
  return selectKernelPath(makeGemmProblem(layer, GemmSpec{kind, schedule}), target) ==
         KernelPath::Hopper;
}

// `s` with the stages it has when they fit, else the deepest that does;
// nullopt when none does.
std::optional<Schedule> withFittingStages(const LayerSpec &layer, GemmKind kind,
                                          const Target &target, Schedule s) {
  for (int stages = s.stages; stages >= 2; --stages) {
    s.stages = stages;
    if (scheduleAccepted(layer, kind, target, s))
      return s;
  }
  return std::nullopt;
}

// `s` with the choices its path ignores set as the center has them or to
// their defaults, so that two schedules of one kernel compare equal: the
// portable path runs every warpgroup mode cooperatively, without clusters,
// N fastest; ping-pong goes N fastest; a mode the tile cannot run is
// cooperative. `persistent` changes no kernel (the Hopper path is always
// persistent, the portable path never) and stays as the center has it.
Schedule normalised(const LayerSpec &layer, GemmKind kind, const Target &target, Schedule s,
                    const Schedule &center) {
  s.persistent = center.persistent;
  if (!onHopperPath(layer, kind, target, s)) {
    s.warpgroups = WarpgroupMode::Cooperative;
    s.cluster = {1, 1};
    s.raster = Raster::AlongN;
    return s;
  }
  if ((s.warpgroups == WarpgroupMode::PingPong && !hopperPingPong(s)) ||
      (s.warpgroups == WarpgroupMode::Staggered && !hopperStaggered(s)))
    s.warpgroups = WarpgroupMode::Cooperative;
  if (hopperPingPong(s))
    s.raster = Raster::AlongN;
  return s;
}

} // namespace

std::vector<Schedule> scheduleNeighbours(const LayerSpec &layer, GemmKind kind,
                                         const Target &target, const Schedule &center) {
  std::vector<Schedule> out;
  const Schedule self = normalised(layer, kind, target, center, center);
  auto add = [&](std::optional<Schedule> s) {
    if (!s)
      return;
    s = normalised(layer, kind, target, *s, center);
    if (!(*s == center) && !(*s == self) && std::find(out.begin(), out.end(), *s) == out.end() &&
        scheduleAccepted(layer, kind, target, *s))
      out.push_back(*s);
  };
  const bool hopper = onHopperPath(layer, kind, target, center);

  for (int m : {64, 128, 256}) {
    Schedule s = center;
    s.tile.m = m;
    add(withFittingStages(layer, kind, target, s));
  }
  for (int n : {64, 128, 256}) {
    Schedule s = center;
    s.tile.n = n;
    add(withFittingStages(layer, kind, target, s));
  }
  if (!hopper)
    for (int k : {32, 64}) {
      Schedule s = center;
      s.tile.k = k;
      add(withFittingStages(layer, kind, target, s));
    }
  for (int stages = 2; stages <= kMaxStages; ++stages) {
    Schedule s = center;
    s.stages = stages;
    add(s);
  }
  if (hopper) {
    // Only modes the Hopper path runs as asked (a ping-pong schedule of a
    // tile it cannot ping-pong runs cooperatively: the same kernel).
    for (WarpgroupMode mode :
         {WarpgroupMode::Cooperative, WarpgroupMode::PingPong, WarpgroupMode::Staggered}) {
      Schedule s = center;
      s.warpgroups = mode;
      if ((mode == WarpgroupMode::PingPong && !hopperPingPong(s)) ||
          (mode == WarpgroupMode::Staggered && !hopperStaggered(s)))
        continue;
      add(s);
    }
    for (int cluster : {1, 2}) {
      Schedule s = center;
      s.cluster.m = cluster;
      if (cluster > 1 &&
          hopperClusterSize(makeGemmProblem(layer, GemmSpec{kind, s}), target) != cluster)
        continue;
      add(s);
    }
  }
  for (Raster raster : {Raster::AlongN, Raster::AlongM}) {
    Schedule s = center;
    s.raster = raster;
    add(s);
  }
  return out;
}

SearchResult searchSchedules(const LayerSpec &layer, GemmKind kind, const Target &target,
                             const Schedule &start, const MeasureFn &measure,
                             const SearchOptions &options) {
  SearchResult result;
  result.best = start;
  auto measured = [&](const Schedule &s) {
    return std::any_of(result.measured.begin(), result.measured.end(),
                       [&](const Measurement &m) { return m.schedule == s; });
  };
  int budget = options.budget;
  std::vector<Schedule> batch = {start};
  for (int round = 0; round < options.rounds && budget > 0; ++round) {
    for (const Schedule &s : scheduleNeighbours(layer, kind, target, result.best))
      if (!measured(s) && std::find(batch.begin(), batch.end(), s) == batch.end())
        batch.push_back(s);
    if (static_cast<int>(batch.size()) > budget)
      batch.resize(static_cast<size_t>(budget));
    if (batch.empty())
      break;
    budget -= static_cast<int>(batch.size());
    const std::vector<Measurement> results = measure(batch);
    const Schedule before = result.best;
    for (size_t i = 0; i < results.size() && i < batch.size(); ++i) {
      Measurement m = results[i];
      m.schedule = batch[i];
      if (round == 0 && i == 0)
        result.startTflops = m.tflops.value_or(0);
      if (m.tflops &&
          (result.bestTflops == 0 || *m.tflops > result.bestTflops * (1 + options.minGain))) {
        result.best = m.schedule;
        result.bestTflops = *m.tflops;
      }
      result.measured.push_back(std::move(m));
    }
    if (result.best == before)
      break;
    batch.clear();
  }
  if (options.confirmRuns <= 0 || result.bestTflops == 0)
    return result;

  // The start and the fastest others, measured again, interleaved.
  std::vector<const Measurement *> ranked;
  for (const Measurement &m : result.measured)
    if (m.tflops && !(m.schedule == start))
      ranked.push_back(&m);
  std::stable_sort(ranked.begin(), ranked.end(), [](const Measurement *a, const Measurement *b) {
    return *a->tflops > *b->tflops;
  });
  std::vector<Schedule> finalists = {start};
  for (size_t i = 0; i < ranked.size() && static_cast<int>(i) < options.confirmTop; ++i)
    finalists.push_back(ranked[i]->schedule);
  // Only the new runs count: the finalists were picked for their first
  // reading, which is biased upwards (a lucky one got them here).
  std::vector<std::vector<double>> samples(finalists.size());
  std::vector<bool> failed(finalists.size(), false);
  for (int run = 0; run < options.confirmRuns; ++run) {
    const std::vector<Measurement> results = measure(finalists);
    for (size_t i = 0; i < results.size() && i < finalists.size(); ++i) {
      Measurement m = results[i];
      m.schedule = finalists[i];
      if (m.tflops)
        samples[i].push_back(*m.tflops);
      else
        failed[i] = true;
      result.confirmations.push_back(std::move(m));
    }
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const size_t n = v.size();
    return n == 0 ? 0.0 : n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
  };
  for (size_t i = 0; i < finalists.size(); ++i) {
    Measurement m;
    m.schedule = finalists[i];
    if (failed[i])
      m.failure = "failed a repeat";
    else
      m.tflops = median(samples[i]);
    result.finalists.push_back(std::move(m));
  }
  // The fastest median among those that beat the start's by minGain (any
  // that works when the start failed).
  result.startTflops = failed[0] ? 0 : median(samples[0]);
  result.best = start;
  result.bestTflops = result.startTflops;
  const double bar = result.startTflops * (1 + options.minGain);
  for (size_t i = 1; i < finalists.size(); ++i) {
    const double m = failed[i] ? 0 : median(samples[i]);
    if (m > 0 && m > bar && m > result.bestTflops) {
      result.best = finalists[i];
      result.bestTflops = m;
    }
  }
  return result;
}

} // namespace moejit
