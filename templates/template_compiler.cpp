#include "templates/template_compiler.h"

#include "templates/embedded_templates.h"

#include <xxhash.h>

#include <cstdio>

namespace moejit {
namespace {

constexpr const char *kProgramSource = "#include \"moejit/layer/kernels.cuh\"\n";
constexpr const char *kProgramName = "moejit_layer_kernels.cu";

bool isRealArch(const std::string &arch) {
  if (arch.rfind("sm_", 0) == 0)
    return true;
  if (arch.rfind("compute_", 0) == 0)
    return false;
  throw Error("NVRTC target '" + arch + "' is neither sm_XY (cubin) nor compute_XY (PTX)");
}

// Destroys the program on every path.
class Program {
public:
  Program(const Nvrtc &nvrtc) : nvrtc_(nvrtc) {
    std::vector<const char *> sources, names;
    for (const TemplateHeader &header : embeddedTemplateHeaders()) {
      headerText_.emplace_back(header.source);
      headerName_.emplace_back(header.name);
    }
    for (size_t i = 0; i < headerText_.size(); ++i) {
      sources.push_back(headerText_[i].c_str());
      names.push_back(headerName_[i].c_str());
    }
    nvrtc_.call(nvrtc_.nvrtcCreateProgram, &program_, kProgramSource, kProgramName,
                static_cast<int>(sources.size()), sources.data(), names.data());
  }
  Program(const Program &) = delete;
  Program &operator=(const Program &) = delete;
  ~Program() { nvrtc_.nvrtcDestroyProgram.fn(&program_); }

  nvrtcProgram handle() const { return program_; }
  std::string log() const {
    size_t size = 0;
    nvrtc_.call(nvrtc_.nvrtcGetProgramLogSize, program_, &size);
    std::string text(size, '\0');
    nvrtc_.call(nvrtc_.nvrtcGetProgramLog, program_, text.data());
    while (!text.empty() && (text.back() == '\0' || text.back() == '\n'))
      text.pop_back();
    return text;
  }

private:
  const Nvrtc &nvrtc_;
  nvrtcProgram program_ = nullptr;
  // NVRTC wants NUL-terminated strings.
  std::vector<std::string> headerText_, headerName_;
};

} // namespace

CompiledTemplates compileTemplateKernels(const Nvrtc &nvrtc, const TemplateProgram &program) {
  const bool cubin = isRealArch(program.arch);
  Program compiled(nvrtc);
  for (const std::string &expression : program.nameExpressions)
    nvrtc.call(nvrtc.nvrtcAddNameExpression, compiled.handle(), expression.c_str());

  std::vector<std::string> options = {"-arch=" + program.arch, "-std=c++17"};
  options.insert(options.end(), program.options.begin(), program.options.end());
  std::vector<const char *> optionPointers;
  for (const std::string &option : options)
    optionPointers.push_back(option.c_str());
  const nvrtcResult result = nvrtc.nvrtcCompileProgram.fn(
      compiled.handle(), static_cast<int>(optionPointers.size()), optionPointers.data());
  CompiledTemplates out;
  out.log = compiled.log();
  if (result != NVRTC_SUCCESS)
    throw Error("NVRTC failed to compile the layer kernel templates for " + program.arch + " (" +
                nvrtc.nvrtcGetErrorString.fn(result) + "):\n" + out.log);

  out.isCubin = cubin;
  size_t size = 0;
  if (cubin) {
    nvrtc.call(nvrtc.nvrtcGetCUBINSize, compiled.handle(), &size);
    out.image.resize(size);
    nvrtc.call(nvrtc.nvrtcGetCUBIN, compiled.handle(), out.image.data());
  } else {
    nvrtc.call(nvrtc.nvrtcGetPTXSize, compiled.handle(), &size);
    out.image.resize(size);
    nvrtc.call(nvrtc.nvrtcGetPTX, compiled.handle(), out.image.data());
    while (!out.image.empty() && out.image.back() == '\0')
      out.image.pop_back();
  }
  for (const std::string &expression : program.nameExpressions) {
    const char *lowered = nullptr;
    nvrtc.call(nvrtc.nvrtcGetLoweredName, compiled.handle(), expression.c_str(), &lowered);
    out.loweredNames.emplace_back(lowered);
  }
  return out;
}

namespace {

std::string programKey(std::string_view compiler, const TemplateProgram &program) {
  XXH3_state_t *state = XXH3_createState();
  XXH3_128bits_reset(state);
  // Each field with its length, so no two inputs concatenate alike.
  auto add = [&](std::string_view text) {
    const uint64_t length = text.size();
    XXH3_128bits_update(state, &length, sizeof length);
    XXH3_128bits_update(state, text.data(), text.size());
  };
  add(kProgramSource);
  for (const TemplateHeader &header : embeddedTemplateHeaders()) {
    add(header.name);
    add(header.source);
  }
  add(compiler);
  add(program.arch);
  for (const std::string &option : program.options)
    add(option);
  add("--names--");
  for (const std::string &expression : program.nameExpressions)
    add(expression);
  const XXH128_hash_t hash = XXH3_128bits_digest(state);
  XXH3_freeState(state);
  char hex[33];
  std::snprintf(hex, sizeof hex, "%016llx%016llx", static_cast<unsigned long long>(hash.high64),
                static_cast<unsigned long long>(hash.low64));
  return hex;
}

} // namespace

std::string templateCacheKey(const Nvrtc &nvrtc, const TemplateProgram &program) {
  return programKey(
      "nvrtc " + std::to_string(nvrtc.versionMajor()) + "." + std::to_string(nvrtc.versionMinor()),
      program);
}

std::string templateCacheKeyAnyNvrtc(const TemplateProgram &program) {
  return programKey("nvrtc any", program);
}

TemplateKernelCache::TemplateKernelCache(std::shared_ptr<const Nvrtc> nvrtc,
                                         std::shared_ptr<TemplateStore> store,
                                         std::string whyNoNvrtc)
    : nvrtc_(std::move(nvrtc)), store_(std::move(store)), whyNoNvrtc_(std::move(whyNoNvrtc)) {
  if (!nvrtc_ && !store_)
    throw Error("the layer kernels need NVRTC or a kernel cache that holds them: " +
                (whyNoNvrtc_.empty() ? std::string("no NVRTC was given") : whyNoNvrtc_));
}

std::shared_ptr<const CompiledTemplates>
TemplateKernelCache::compile(const TemplateProgram &program) {
  const std::string anyKey = templateCacheKeyAnyNvrtc(program);
  const std::string key = nvrtc_ ? templateCacheKey(*nvrtc_, program) : anyKey;
  return compiled_.get(key, [&]() -> std::shared_ptr<const CompiledTemplates> {
    std::shared_ptr<const CompiledTemplates> compiled =
        store_ ? store_->load(key, program) : nullptr;
    if (!compiled && !nvrtc_)
      throw Error("the layer kernels for " + program.arch + " (" +
                  std::to_string(program.nameExpressions.size()) +
                  " templates) are not in the kernel cache, and NVRTC cannot compile them: " +
                  whyNoNvrtc_ +
                  "; fill the cache with `moejit precompile` on a host where NVRTC is installed");
    if (!compiled) {
      compiled =
          std::make_shared<const CompiledTemplates>(compileTemplateKernels(*nvrtc_, program));
      ++nvrtcCompiles_;
      if (store_) {
        store_->store(key, program, *compiled);
        store_->store(anyKey, program, *compiled);
      }
    } else if (nvrtc_ && store_ && !store_->contains(anyKey)) {
      // An entry of an earlier version: add the copy a host without NVRTC finds.
      store_->store(anyKey, program, *compiled);
    }
    return compiled;
  });
}

size_t TemplateKernelCache::nvrtcCompiles() const { return nvrtcCompiles_.load(); }

} // namespace moejit
