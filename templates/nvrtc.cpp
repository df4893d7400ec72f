#include "templates/nvrtc.h"

#include <dlfcn.h>

namespace moejit {

std::vector<std::string> nvrtcLibraryCandidates(std::string_view cudaHome) {
  std::vector<std::string> candidates = {"libnvrtc.so.13", "libnvrtc.so"};
  auto addDirectory = [&](std::string_view root) {
    const std::string lib = std::string(root) + "/lib64/";
    candidates.push_back(lib + "libnvrtc.so.13");
    candidates.push_back(lib + "libnvrtc.so");
  };
  if (!cudaHome.empty())
    addDirectory(cudaHome);
  addDirectory("/usr/local/cuda");
  return candidates;
}

std::vector<std::string> nvrtcLibraryCandidates(const Knobs &knobs) {
  std::vector<std::string> candidates = nvrtcLibraryCandidates(knobs.cudaHome);
  if (!knobs.nvrtc.empty())
    candidates.insert(candidates.begin(), knobs.nvrtc);
  return candidates;
}

std::shared_ptr<const Nvrtc> Nvrtc::load(const std::vector<std::string> &candidates) {
  std::string tried;
  for (const std::string &path : candidates) {
    void *library = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!library) {
      const char *why = dlerror();
      tried += "\n  " + path + ": " + (why ? why : "not found");
      continue;
    }
    std::shared_ptr<Nvrtc> nvrtc(new Nvrtc(library, path));
    std::string missing;
    auto resolve = [&](auto &entry) {
      entry.fn = reinterpret_cast<decltype(entry.fn)>(dlsym(library, entry.name));
      if (!entry.fn)
        missing += std::string(missing.empty() ? "" : ", ") + entry.name;
    };
#define MOEJIT_RESOLVE_NVRTC_ENTRY(name) resolve(nvrtc->name);
    MOEJIT_NVRTC_ENTRIES(MOEJIT_RESOLVE_NVRTC_ENTRY)
#undef MOEJIT_RESOLVE_NVRTC_ENTRY
    resolve(nvrtc->nvrtcGetErrorString);
    if (!missing.empty()) {
      tried += "\n  " + path + ": lacks " + missing;
      continue; // the destructor closes the library
    }
    nvrtc->call(nvrtc->nvrtcVersion, &nvrtc->major_, &nvrtc->minor_);
    return nvrtc;
  }
  throw Error("NVRTC (libnvrtc, from the CUDA toolkit) could not be loaded; moejit compiles its "
              "layer kernels with it. Install the CUDA toolkit or set CUDA_HOME. Tried:" +
              tried);
}

Nvrtc::~Nvrtc() {
  if (library_)
    dlclose(library_);
}

void Nvrtc::check(nvrtcResult result, const char *call) const {
  if (result != NVRTC_SUCCESS)
    throw Error(std::string(call) + " failed: " + nvrtcGetErrorString.fn(result));
}

} // namespace moejit
