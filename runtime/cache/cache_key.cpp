#include "runtime/cache/cache_key.h"

#include "moejit/dsl.h"
#include "moejit/version.h"

#include <nlohmann/json.hpp>

#include <string_view>

namespace moejit {
namespace {

// Bump when the meaning of a key field changes without its JSON changing.
constexpr int kKeySchema = 1;

// A tripwire: a new GemmProblem field must be added to toJson(GemmProblem)
// below, or kernels that differ in it would share a cache entry.
static_assert(sizeof(void *) != 8 || sizeof(GemmProblem) == 152,
              "GemmProblem changed: add the new field to toJson(GemmProblem) in "
              "runtime/cache/cache_key.cpp, then update this size");

std::string_view varlenName(Varlen varlen) {
  switch (varlen) {
  case Varlen::M:
    return "m";
  case Varlen::K:
    return "k";
  }
  return "?";
}

std::string_view epilogueName(Epilogue epilogue) {
  switch (epilogue) {
  case Epilogue::Store:
    return "store";
  case Epilogue::ActForward:
    return "act_forward";
  case Epilogue::ScaleRows:
    return "scale_rows";
  case Epilogue::DActivation:
    return "dactivation";
  }
  return "?";
}

std::string describe(const CacheKeyFields &fields, const std::string &hex) {
  std::string text = fields.problems.size() == 1 ? "kernel " : "kernels ";
  for (size_t i = 0; i < fields.problems.size(); ++i) {
    if (i > 0)
      text += ", ";
    text += fields.problems[i].kernelName;
  }
  return text + " for " + fields.target.arch + " (key " + hex + ")";
}

} // namespace

nlohmann::json toJson(const GemmProblem &p) {
  return {
      {"kind", toString(p.kind)},
      {"dtype", toString(p.dtype)},
      {"varlen", varlenName(p.varlen)},
      {"experts", p.experts},
      {"m", p.m},
      {"n", p.n},
      {"k", p.k},
      {"a_k_contiguous", p.aKContiguous},
      {"b_k_contiguous", p.bKContiguous},
      {"gather_a", p.gatherA},
      {"gather_b", p.gatherB},
      {"scale_b_rows", p.scaleBRows},
      {"epilogue", epilogueName(p.epilogue)},
      {"activation", toString(p.activation)},
      {"gate_up", toString(p.gateUp)},
      {"c_columns", p.cColumns},
      {"aux_columns", p.auxColumns},
      // One serialisation of a schedule for the spec and the cache.
      {"schedule", toJson(GemmSpec{p.kind, p.schedule}).at("schedule")},
      {"kernel_name", p.kernelName},
  };
}

CacheKeyFields currentKeyFields(std::vector<GemmProblem> problems, const Target &target,
                                std::string codeKnobs) {
  return {std::move(problems), target, std::string(kVersion), std::string(kLlvmVersion),
          kKernelRevision, std::move(codeKnobs)};
}

CacheKey::CacheKey(const CacheKeyFields &fields) {
  nlohmann::json problems = nlohmann::json::array();
  for (const GemmProblem &problem : fields.problems)
    problems.push_back(toJson(problem));
  const nlohmann::json canonical = {
      {"key_schema", kKeySchema},
      {"problems", std::move(problems)},
      {"arch", fields.target.arch},
      {"sm_count", fields.target.smCount},
      {"max_shared_bytes_per_block", fields.target.maxSharedBytesPerBlock},
      {"moejit_version", fields.moejitVersion},
      {"llvm_version", fields.llvmVersion},
      {"kernel_revision", fields.kernelRevision},
      {"code_knobs", fields.codeKnobs},
  };
  canonical_ = canonical.dump();
  hex_ = contentHash(canonical);
  description_ = describe(fields, hex_);
}

} // namespace moejit
