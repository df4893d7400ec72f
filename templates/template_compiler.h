// Compiles instantiations of the embedded kernel templates with NVRTC. The
// kernel names come from NVRTC (name expressions and their lowered names).
// compileTemplateKernels is the seam the kernel cache wraps, keyed by
// templateCacheKey; TemplateKernelCache keeps results in memory meanwhile.
#pragma once

#include "templates/nvrtc.h"

#include <map>
#include <memory>
#include <mutex>
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

// Compiled programs by cache key, for one process. Thread-safe; concurrent
// requests for one program compile it once.
class TemplateKernelCache {
public:
  explicit TemplateKernelCache(std::shared_ptr<const Nvrtc> nvrtc) : nvrtc_(std::move(nvrtc)) {}

  std::shared_ptr<const CompiledTemplates> compile(const TemplateProgram &program);
  const Nvrtc &nvrtc() const { return *nvrtc_; }

private:
  std::shared_ptr<const Nvrtc> nvrtc_;
  std::mutex mutex_;
  std::map<std::string, std::shared_ptr<const CompiledTemplates>> compiled_;
};

} // namespace moejit
