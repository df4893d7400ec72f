// `moejit run FILE --forward`: the whole MoE layer forward on the GPU with
// random inputs, checked against the float64 layer reference, then timed
// stage by stage.
#pragma once

#include "moejit/spec.h"
#include "runtime/cache/kernel_cache.h"
#include "runtime/layer/moe_layer.h"
#include "templates/template_compiler.h"

#include <cstdint>
#include <iosfwd>
#include <string>

namespace moejit {

struct ForwardRunOptions {
  std::string file;      // the .moe spec
  std::string layer;     // empty: the file's first layer
  int64_t tokens = 4096; // T
  bool tokenRounding = false;
  // Empty: logits = X Wr with random router weights; "uniform" or "skewed":
  // caller-given random logits of that kind.
  std::string routingLogits;
  uint64_t seed = 1;
  int iters = 20;                           // timed forwards (medians reported); 0: check only
  int warmup = 3;                           // untimed forwards before them
  std::string arch;                         // empty: MOEJIT_ARCH, else the GPU's
  int64_t maxReferenceMacs = 4'000'000'000; // above it a sample of tokens is checked
  double tolerance = 1e-2;                  // relative Frobenius error of O
  std::string jsonPath;                     // when set, the results are also written there as JSON
};

// Exit codes as runCommand's (run.h): 0 ok (also without a GPU), 1 bad
// spec, 2 bad options or driver errors, 3 the check failed.
int runForwardCommand(const ForwardRunOptions &options, std::ostream &out, std::ostream &err);

// Compiles (through `cache`) and loads the layer's up_proj and down_proj, one
// module each, and builds the MoeLayer over them (internal::makeMoeLayer).
internal::MoeLayer loadMoeLayer(const Gpu &gpu, KernelCache &cache, TemplateKernelCache &templates,
                                const LayerSpec &layer, const Target &target, bool withRounding);

} // namespace moejit
