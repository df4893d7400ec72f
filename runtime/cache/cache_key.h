// The kernel cache key: a content hash over everything that changes the code
// of a compiled module. Never over token counts: M is a run-time value.
#pragma once

#include "moejit/problem.h"
#include "moejit/spec.h"

#include <nlohmann/json_fwd.hpp>

#include <string>
#include <vector>

namespace moejit {

// Canonical JSON of a problem: every field, the schedule and the kernel name.
nlohmann::json toJson(const GemmProblem &problem);

// What a compiled module (one kernel per problem) depends on.
struct CacheKeyFields {
  std::vector<GemmProblem> problems;
  Target target;             // arch, SM count, shared-memory limit
  std::string moejitVersion; // kVersion
  std::string llvmVersion;   // kLlvmVersion (LLVM and MLIR ship together)
  int kernelRevision = 0;    // kKernelRevision
  // Every other setting that changes the generated code, as the compile step
  // spells it (e.g. "fast-math=1;ptx-isa=8.5"); empty when there is none.
  std::string codeKnobs;
};

// The fields of this build: kVersion and kLlvmVersion from moejit/version.h.
CacheKeyFields currentKeyFields(std::vector<GemmProblem> problems, const Target &target,
                                std::string codeKnobs = {});

// The CUDA driver version is deliberately not part of the key: the PTX does
// not depend on it. A cached cubin is tried on load and a driver that
// refuses it gets the PTX (KernelArtifact::cubinFor).
class CacheKey {
public:
  explicit CacheKey(const CacheKeyFields &fields);

  // contentHash (XXH3-128, 32 hex digits) of canonicalJson().
  const std::string &hex() const { return hex_; }
  // The key fields as canonical JSON text; stored in every entry's header.
  const std::string &canonicalJson() const { return canonical_; }
  // For messages: "kernels a, b for sm_90a (key 0123...)".
  const std::string &description() const { return description_; }

  friend bool operator==(const CacheKey &a, const CacheKey &b) { return a.hex_ == b.hex_; }

private:
  std::string hex_;
  std::string canonical_;
  std::string description_;
};

} // namespace moejit
