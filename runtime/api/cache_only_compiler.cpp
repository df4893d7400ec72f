#include "runtime/api/kernel_compiler.h"

namespace moejit {

// The cache-only runtime has no compiler: the Runtime is strict and a cache
// miss names `moejit precompile`.
std::unique_ptr<KernelCompiler> makeDefaultKernelCompiler() { return nullptr; }

} // namespace moejit
