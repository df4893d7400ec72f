// Compiles instantiations of the embedded kernel templates with NVRTC. The
// kernel names come from NVRTC (name expressions and their lowered names).
// compileTemplateKernels is the seam the kernel cache wraps, keyed by
// templateCacheKey; TemplateKernelCache keeps results in memory meanwhile.
#pragma once

#include "compiler/spec/build_once.h"
#include "templates/nvrtc.h"

#include <atomic>
#include <memory>
#include <string>
#include <vector>

namespace moejit {

// What to compile: instantiations named by C++ expressions such as
// "moejit::router_topk<128, 8, 0, true>", for one architecture.
struct TemplateProgram {
  // "sm_XY[a]": a cubin for that GPU; "compute_XY[a]": PTX.
  std::string arch;
  std::vector<std::string> nameExpressions;
  std::vector<std::string> options; // further NVRTC options
};

struct CompiledTemplates {
  bool isCubin = false;                  // else PTX text
  std::vector<char> image;               // the cubin, or the PTX without its trailing NUL
  std::vector<std::string> loweredNames; // one per name expression, same order
  std::string log;                       // NVRTC's log (warnings)
};

// Throws Error for a malformed arch, and with NVRTC's log when the compile
// fails.
CompiledTemplates compileTemplateKernels(const Nvrtc &nvrtc, const TemplateProgram &program);

// Hex digest of everything that changes the output: the embedded template
// sources, NVRTC's version, the arch, the options and the name expressions.
std::string templateCacheKey(const Nvrtc &nvrtc, const TemplateProgram &program);
// The same without NVRTC's version: what a host without NVRTC looks up. The
// store holds every compile under both keys (the newest compile of a
// program wins this one).
std::string templateCacheKeyAnyNvrtc(const TemplateProgram &program);

// A persistent level under TemplateKernelCache's memory (the runtime's
// kernel cache on disk), so that a new process loads what an earlier one
// compiled instead of running NVRTC again. `load` returns null on a miss.
class TemplateStore {
public:
  virtual ~TemplateStore() = default;
  virtual std::shared_ptr<const CompiledTemplates> load(const std::string &key,
                                                        const TemplateProgram &program) = 0;
  virtual void store(const std::string &key, const TemplateProgram &program,
                     const CompiledTemplates &compiled) = 0;
  // Whether `key` has an entry, without reading it.
  virtual bool contains(const std::string &key) const = 0;
};

// Compiled programs by cache key: in memory for one process, then in
// `store` when there is one, else compiled with NVRTC (and stored).
// Thread-safe; concurrent requests for one program compile it once.
//
// Without NVRTC (`nvrtc` null; `whyNoNvrtc` says why, e.g. Nvrtc::load's
// error) the cache serves what `store` holds under the NVRTC-free key and
// throws Error for the rest; it then needs a store.
class TemplateKernelCache {
public:
  explicit TemplateKernelCache(std::shared_ptr<const Nvrtc> nvrtc,
                               std::shared_ptr<TemplateStore> store = nullptr,
                               std::string whyNoNvrtc = {});

  std::shared_ptr<const CompiledTemplates> compile(const TemplateProgram &program);
  // Whether a miss compiles (NVRTC is here) rather than throws.
  bool canCompile() const { return nvrtc_ != nullptr; }
  // Programs this cache had NVRTC compile (the others came from the store).
  size_t nvrtcCompiles() const;

private:
  std::shared_ptr<const Nvrtc> nvrtc_;
  std::shared_ptr<TemplateStore> store_;
  std::string whyNoNvrtc_;
  // NVRTC runs outside any lock: programs of different keys compile in
  // parallel, and a caller whose program is being compiled waits for it.
  BuildOnce<std::string, CompiledTemplates> compiled_;
  std::atomic<size_t> nvrtcCompiles_{0};
};

} // namespace moejit
