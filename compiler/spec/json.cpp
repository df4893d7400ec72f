// Canonical JSON of a Spec and its content hash (part of the kernel cache key).
#include "moejit/dsl.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <xxhash.h>

namespace moejit {

namespace {

nlohmann::json toJson(const Schedule &s) {
  return {
      {"tile", {{"m", s.tile.m}, {"n", s.tile.n}, {"k", s.tile.k}}},
      {"stages", s.stages},
      {"cluster", {{"m", s.cluster.m}, {"n", s.cluster.n}}},
      {"warpgroups", toString(s.warpgroups)},
      {"raster", toString(s.raster)},
      {"persistent", s.persistent},
      {"stores", toString(s.stores)},
  };
}

} // namespace

nlohmann::json toJson(const GemmSpec &gemm) {
  return {{"kind", toString(gemm.kind)}, {"schedule", toJson(gemm.schedule)}};
}

nlohmann::json toJson(const LayerSpec &layer) {
  nlohmann::json gemms = nlohmann::json::array();
  for (const GemmSpec &gemm : layer.gemms)
    gemms.push_back(toJson(gemm));
  return {
      {"name", layer.name},
      {"experts", layer.experts},
      {"hidden", layer.hidden},
      {"intermediate", layer.intermediate},
      {"dtype", toString(layer.dtype)},
      {"activation", toString(layer.activation)},
      {"gate_up", toString(layer.gateUp)},
      {"router",
       {{"scores", toString(layer.router.scores)},
        {"top_k", layer.router.topK},
        {"renormalize", layer.router.renormalize}}},
      {"rounding", {{"mode", toString(layer.rounding.mode)}, {"tile", layer.rounding.tile}}},
      {"gemms", std::move(gemms)},
  };
}

nlohmann::json toJson(const Spec &spec) {
  nlohmann::json layers = nlohmann::json::array();
  for (const LayerSpec &layer : spec.layers)
    layers.push_back(toJson(layer));
  return {{"layers", std::move(layers)}};
}

std::string contentHash(const nlohmann::json &canonical) {
  const std::string text = canonical.dump();
  XXH128_canonical_t digest;
  XXH128_canonicalFromHash(&digest, XXH3_128bits(text.data(), text.size()));
  std::string hex;
  for (unsigned char byte : digest.digest)
    hex += fmt::format("{:02x}", byte);
  return hex;
}

std::string specHash(const LayerSpec &layer) { return contentHash(toJson(layer)); }

} // namespace moejit
