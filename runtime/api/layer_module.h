// A layer's grouped GEMMs as one cached module: the problems, the cache key,
// the compile through the cache and the load on a GPU. Shared by the public
// Runtime and `moejit run`; includes no compiler header (the JIT is reached
// through KernelCompiler).
#pragma once

#include "moejit/knobs.h"
#include "moejit/problem.h"
#include "moejit/spec.h"
#include "runtime/api/kernel_compiler.h"
#include "runtime/cache/kernel_cache.h"
#include "runtime/src/module.h"
#include "templates/template_compiler.h"

#include <memory>
#include <optional>
#include <vector>

namespace moejit {

// The problems of the layer's GEMMs in spec order (only `only` when given).
// Throws Error when the layer has none (an unresolved Spec).
std::vector<GemmProblem> layerProblems(const LayerSpec &layer,
                                       std::optional<GemmKind> only = std::nullopt);

// The layer forward's module: up_proj then down_proj (Runtime::layer(),
// `moejit run --forward`); empty when the layer lacks either.
std::vector<GemmProblem> forwardProblems(const LayerSpec &layer);

// The cache key of the module holding `problems` for `target`.
CacheKey moduleKey(const std::vector<GemmProblem> &problems, const Target &target);

// `artifact` (the cache's entry of `key`) with a cubin: when it has none
// (compiled with MOEJIT_PTXAS=off, or where no toolkit was found) and a
// ptxas is found now, its PTX is assembled once and the entry is stored
// again with the cubin, so later loads skip the driver's JIT (1.6-1.9 s per
// layer on the H100 host). Without ptxas, or when ptxas fails, the artifact
// as it was (the driver JITs the PTX).
ArtifactPtr withCubin(KernelCache &cache, const CacheKey &key, ArtifactPtr artifact,
                      const Target &target);

struct CachedModule {
  ArtifactPtr artifact;
  bool compiled = false; // this call ran the compiler
  double compileMs = 0;
};
// Memory, then disk, then `compiler` (null: a miss is an error naming
// `moejit precompile`). Strict mode is the cache's. An entry from the cache
// without a cubin gets one (withCubin).
CachedModule compileThroughCache(KernelCache &cache, const CacheKey &key,
                                 const std::vector<GemmProblem> &problems, const Target &target,
                                 const KernelCompiler *compiler);

// Loads `artifact` on `gpu` (its context must be current): its cubin when it
// has one the driver takes, else its PTX through the driver's whole-program
// JIT (Module::fromPtx). `jitCompiled`, when given, says which it was.
Module loadModule(const Gpu &gpu, const KernelArtifact &artifact, bool *jitCompiled = nullptr);

// The NVRTC-compiled layer kernels (routing, aggregation) in the kernel
// cache: an entry per program, keyed by its template key for `target`, the
// cubin (or PTX) and its lowered names. A new process loads them from disk
// instead of compiling again. Lookups never compile, so strict mode, which
// is about the GEMM JIT, does not refuse them; a bad entry counts as a miss.
std::shared_ptr<TemplateStore> makeCacheTemplateStore(KernelCache &cache, const Target &target);

// The layer kernels' cache of a runtime: NVRTC found through the knobs
// (MOEJIT_NVRTC, CUDA_HOME) over `cache`; without NVRTC it serves what the
// cache holds (`moejit precompile` elsewhere) and names the missing library
// on a miss.
std::unique_ptr<TemplateKernelCache> makeTemplateKernelCache(const Knobs &knobs,
                                                             KernelCache &cache,
                                                             const Target &target);

} // namespace moejit
