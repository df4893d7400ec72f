// The seam between the runtime and the JIT: the runtime reaches the compiler
// only through KernelCompiler, so a host that serves from a precompiled cache
// links a runtime without LLVM/MLIR. No compiler header is included here.
#pragma once

#include "moejit/problem.h"
#include "moejit/spec.h"
#include "runtime/cache/cache_entry.h"

#include <memory>
#include <vector>

namespace moejit {

class KernelCompiler {
public:
  virtual ~KernelCompiler() = default;
  // One PTX module with one kernel per problem, in order. Throws Error with
  // the compiler's diagnostics on failure.
  virtual KernelArtifact compile(const std::vector<GemmProblem> &problems,
                                 const Target &target) const = 0;
};

// The compiler of this library flavour: the MLIR JIT (jit_compiler.cpp, in
// moejit_api_jit) or none (cache_only_compiler.cpp: every miss is an error).
// Exactly one of the two is linked.
std::unique_ptr<KernelCompiler> makeDefaultKernelCompiler();

} // namespace moejit
