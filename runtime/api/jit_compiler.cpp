#include "compiler/backend/compile.h"
#include "moejit/error.h"
#include "runtime/api/kernel_compiler.h"
#include "runtime/src/ptxas.h"

#include <string>

namespace moejit {

namespace {

class JitCompiler final : public KernelCompiler {
public:
  KernelArtifact compile(const std::vector<GemmProblem> &problems,
                         const Target &target) const override {
    CompileOptions options;
    options.target = target;
    options.stage = EmitStage::Ptx;
    CompileOutput output;
    std::string error;
    if (!compileGemms(problems, options, output, error))
      throw Error("compiling for " + target.arch + " failed:\n" + error);
    if (output.kernelNames.size() != problems.size())
      throw Error("the compiler returned " + std::to_string(output.kernelNames.size()) +
                  " kernel names for " + std::to_string(problems.size()) + " grouped GEMMs");
    KernelArtifact artifact;
    artifact.ptx = std::move(output.text);
    artifact.kernelNames = std::move(output.kernelNames);
    // The cubin is assembled here, once, and kept beside the PTX, so loads
    // skip the driver's JIT; without ptxas the PTX alone is cached.
    if (const std::optional<std::string> ptxas = findPtxas(Knobs::fromEnvironment()))
      artifact.cubin = assembleCubin(*ptxas, artifact.ptx, target.arch);
    return artifact;
  }
};

} // namespace

std::unique_ptr<KernelCompiler> makeDefaultKernelCompiler() {
  return std::make_unique<JitCompiler>();
}

} // namespace moejit
