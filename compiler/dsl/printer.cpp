// Canonical .moe text: every field explicit, in a fixed order.
#include "moejit/dsl.h"

#include <fmt/format.h>

namespace moejit {

namespace {

std::string_view boolName(bool value) { return value ? "true" : "false"; }

void printGemm(const GemmSpec &gemm, std::string &out) {
  const Schedule &s = gemm.schedule;
  out += fmt::format("  gemm {} {{\n", toString(gemm.kind));
  out += fmt::format("    tile = {}x{}x{}\n", s.tile.m, s.tile.n, s.tile.k);
  out += fmt::format("    stages = {}\n", s.stages);
  out += fmt::format("    cluster = {}x{}\n", s.cluster.m, s.cluster.n);
  out += fmt::format("    warpgroups = {}\n", toString(s.warpgroups));
  out += fmt::format("    raster = {}\n", toString(s.raster));
  out += fmt::format("    persistent = {}\n", boolName(s.persistent));
  out += fmt::format("    stores = {}\n", toString(s.stores));
  out += "  }\n";
}

void printLayer(const LayerSpec &layer, std::string &out) {
  out += fmt::format("layer {} {{\n", layer.name);
  out += fmt::format("  experts = {}\n", layer.experts);
  out += fmt::format("  hidden = {}\n", layer.hidden);
  out += fmt::format("  intermediate = {}\n", layer.intermediate);
  out += fmt::format("  dtype = {}\n", toString(layer.dtype));
  out += fmt::format("  activation = {}\n", toString(layer.activation));
  out += fmt::format("  gate_up = {}\n", toString(layer.gateUp));
  out += "  router {\n";
  out += fmt::format("    scores = {}\n", toString(layer.router.scores));
  out += fmt::format("    top_k = {}\n", layer.router.topK);
  out += fmt::format("    renormalize = {}\n", boolName(layer.router.renormalize));
  out += "  }\n";
  out += "  rounding {\n";
  out += fmt::format("    mode = {}\n", toString(layer.rounding.mode));
  out += fmt::format("    tile = {}\n", layer.rounding.tile);
  out += "  }\n";
  for (const GemmSpec &gemm : layer.gemms)
    printGemm(gemm, out);
  out += "}\n";
}

} // namespace

std::string printSpec(const Spec &spec) {
  std::string out;
  for (std::size_t i = 0; i < spec.layers.size(); ++i) {
    if (i > 0)
      out += "\n";
    printLayer(spec.layers[i], out);
  }
  return out;
}

} // namespace moejit
