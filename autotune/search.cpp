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

} // namespace

bool scheduleAccepted(const LayerSpec &layer, GemmKind kind, const Target &target,
                      const Schedule &schedule) {
  Spec probe;
  probe.layers.push_back(layer);
  probe.layers.back().gemms = {GemmSpec{kind, schedule}};
  Diagnostics ignored;
  return checkSpec(probe, target, ignored);
}

std::vector<Schedule> scheduleNeighbours(const LayerSpec &layer, GemmKind kind,
                                         const Target &target, const Schedule &center) {
  std::vector<Schedule> out;
  auto add = [&](const std::optional<Schedule> &s) {
    if (s && !(*s == center) && std::find(out.begin(), out.end(), *s) == out.end() &&
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
  } else {
    Schedule s = center;
    s.persistent = !center.persistent;
    add(s);
  }
  for (Raster raster : {Raster::AlongN, Raster::AlongM}) {
    Schedule s = center;
    s.raster = raster;
    add(s);
  }
  return out;
}

SearchResult searchSchedules(const LayerSpec &layer, GemmKind kind, const Target &target,
                             const Schedule &start, const MeasureFn &measure, int budget,
                             int rounds, double minGain) {
  SearchResult result;
  result.best = start;
  auto measured = [&](const Schedule &s) {
    return std::any_of(result.measured.begin(), result.measured.end(),
                       [&](const Measurement &m) { return m.schedule == s; });
  };
  std::vector<Schedule> batch = {start};
  for (int round = 0; round < rounds && budget > 0; ++round) {
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
      if (m.tflops && (result.bestTflops == 0 || *m.tflops > result.bestTflops * (1 + minGain))) {
        result.best = m.schedule;
        result.bestTflops = *m.tflops;
      }
      result.measured.push_back(std::move(m));
    }
    if (result.best == before)
      break;
    batch.clear();
  }
  return result;
}

} // namespace moejit
