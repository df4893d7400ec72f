#include "runtime/api/layer_module.h"

#include "moejit/error.h"
#include "runtime/src/ptxas.h"

#include <chrono>
#include <filesystem>
#include <mutex>
#include <optional>
#include <set>

namespace moejit {

std::vector<GemmProblem> layerProblems(const LayerSpec &layer, std::optional<GemmKind> only) {
  std::vector<GemmProblem> problems;
  for (const GemmSpec &gemm : layer.gemms)
    if (!only || gemm.kind == *only)
      problems.push_back(makeGemmProblem(layer, gemm));
  if (problems.empty())
    throw Error("layer '" + layer.name + "' has no " +
                (only ? std::string(toString(*only)) + " GEMM"
                      : std::string("grouped GEMMs: resolve the Spec first "
                                    "(resolveSpecOrThrow or Runtime::resolve)")));
  return problems;
}

std::vector<GemmProblem> forwardProblems(const LayerSpec &layer) {
  std::vector<GemmProblem> problems;
  for (GemmKind kind : {GemmKind::UpProj, GemmKind::DownProj})
    for (const GemmSpec &gemm : layer.gemms)
      if (gemm.kind == kind) {
        problems.push_back(makeGemmProblem(layer, gemm));
        break;
      }
  if (problems.size() != 2)
    problems.clear();
  return problems;
}

CacheKey moduleKey(const std::vector<GemmProblem> &problems, const Target &target) {
  return CacheKey(currentKeyFields(problems, target));
}

ArtifactPtr withCubin(KernelCache &cache, const CacheKey &key, ArtifactPtr artifact,
                      const Target &target) {
  std::optional<std::string> ptxas;
  try {
    ptxas = findPtxas(Knobs::fromEnvironment());
  } catch (const std::exception &) {
    return artifact; // a bad MOEJIT_PTXAS: the compile path reports it
  }
  if (!ptxas || artifact->ptx.empty())
    return artifact;
  // A key ptxas failed on is not tried again in this process.
  static std::mutex failedMutex;
  static std::set<std::string> failed;
  {
    std::lock_guard lock(failedMutex);
    if (failed.count(key.hex()))
      return artifact;
  }
  KernelArtifact upgraded = *artifact;
  try {
    upgraded.cubin = assembleCubin(*ptxas, upgraded.ptx, target.arch);
  } catch (const Error &) {
    std::lock_guard lock(failedMutex);
    failed.insert(key.hex());
    return artifact; // the driver's JIT still takes the PTX
  }
  upgraded.cubinDriverVersion = 0;
  return cache.store(key, std::move(upgraded));
}

CachedModule compileThroughCache(KernelCache &cache, const CacheKey &key,
                                 const std::vector<GemmProblem> &problems, const Target &target,
                                 const KernelCompiler *compiler) {
  CachedModule result;
  result.artifact = cache.getOrCompile(key, [&] {
    if (!compiler)
      throw Error("kernel cache miss: " + key.description() +
                  " is not in the kernel cache, and this moejit runtime has no compiler; "
                  "fill the cache with `moejit precompile FILE --arch=" +
                  target.arch + "`");
    const auto start = std::chrono::steady_clock::now();
    KernelArtifact artifact = compiler->compile(problems, target);
    result.compileMs =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    result.compiled = true;
    return artifact;
  });
  if (!result.compiled && result.artifact->cubin.empty())
    result.artifact = withCubin(cache, key, std::move(result.artifact), target);
  if (result.artifact->kernelNames.size() != problems.size())
    throw Error("kernel cache entry " + key.hex() + " holds " +
                std::to_string(result.artifact->kernelNames.size()) + " kernels for " +
                std::to_string(problems.size()) + " grouped GEMMs");
  return result;
}

Module loadModule(const Gpu &gpu, const KernelArtifact &artifact, bool *jitCompiled) {
  if (const std::vector<char> *cubin = artifact.cubinFor(gpu.driver().version())) {
    std::optional<Module> module = Module::tryFromCubin(gpu, *cubin);
    if (module) {
      if (jitCompiled)
        *jitCompiled = false;
      return std::move(*module);
    }
  }
  if (jitCompiled)
    *jitCompiled = true;
  return Module::fromPtx(gpu, artifact.ptx);
}

namespace {

class CacheTemplateStore final : public TemplateStore {
public:
  CacheTemplateStore(KernelCache &cache, Target target) : cache_(cache), target_(std::move(target)) {}

  std::shared_ptr<const CompiledTemplates> load(const std::string &key,
                                                const TemplateProgram &program) override {
    const ArtifactPtr artifact = cache_.lookup(cacheKey(key));
    if (!artifact || artifact->kernelNames.size() != program.nameExpressions.size())
      return nullptr;
    auto compiled = std::make_shared<CompiledTemplates>();
    compiled->isCubin = !artifact->cubin.empty();
    if (compiled->isCubin)
      compiled->image = artifact->cubin;
    else
      compiled->image.assign(artifact->ptx.begin(), artifact->ptx.end());
    compiled->loweredNames = artifact->kernelNames;
    return compiled->image.empty() ? nullptr : compiled;
  }

  void store(const std::string &key, const TemplateProgram &,
             const CompiledTemplates &compiled) override {
    KernelArtifact artifact;
    if (compiled.isCubin)
      artifact.cubin = compiled.image;
    else
      artifact.ptx.assign(compiled.image.begin(), compiled.image.end());
    artifact.kernelNames = compiled.loweredNames;
    cache_.store(cacheKey(key), std::move(artifact));
  }

  bool contains(const std::string &key) const override {
    // Memory only: nothing outlives the process to share the entry with.
    if (!cache_.diskEnabled())
      return true;
    std::error_code error;
    return std::filesystem::exists(cache_.entryPath(cacheKey(key)), error);
  }

private:
  // No problems; the template key (sources, NVRTC version, arch, options,
  // names) as the code knob.
  CacheKey cacheKey(const std::string &templateKey) const {
    return CacheKey(currentKeyFields({}, target_, "nvrtc-templates=" + templateKey));
  }

  KernelCache &cache_;
  Target target_;
};

} // namespace

std::shared_ptr<TemplateStore> makeCacheTemplateStore(KernelCache &cache, const Target &target) {
  return std::make_shared<CacheTemplateStore>(cache, target);
}

std::unique_ptr<TemplateKernelCache> makeTemplateKernelCache(const Knobs &knobs,
                                                             KernelCache &cache,
                                                             const Target &target) {
  std::shared_ptr<const Nvrtc> nvrtc;
  std::string whyNoNvrtc;
  try {
    nvrtc = Nvrtc::load(nvrtcLibraryCandidates(knobs));
  } catch (const Error &e) {
    whyNoNvrtc = e.what();
  }
  return std::make_unique<TemplateKernelCache>(std::move(nvrtc), makeCacheTemplateStore(cache, target),
                                               std::move(whyNoNvrtc));
}

} // namespace moejit
