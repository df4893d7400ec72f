// NVRTC, loaded with dlopen like the driver: moejit links no libnvrtc.
#pragma once

#include "moejit/error.h"
#include "moejit/knobs.h"

#include <nvrtc.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace moejit {

#define MOEJIT_NVRTC_ENTRIES(X)                                                                    \
  X(nvrtcVersion)                                                                                  \
  X(nvrtcCreateProgram)                                                                            \
  X(nvrtcDestroyProgram)                                                                           \
  X(nvrtcCompileProgram)                                                                           \
  X(nvrtcGetProgramLogSize)                                                                        \
  X(nvrtcGetProgramLog)                                                                            \
  X(nvrtcGetPTXSize)                                                                               \
  X(nvrtcGetPTX)                                                                                   \
  X(nvrtcGetCUBINSize)                                                                             \
  X(nvrtcGetCUBIN)                                                                                 \
  X(nvrtcAddNameExpression)                                                                        \
  X(nvrtcGetLoweredName)

template <class Fn> struct NvrtcEntry {
  Fn fn = nullptr;
  const char *name = nullptr;
};

// Where libnvrtc is looked for, in order: the loader's search path by soname
// (libnvrtc.so.13, libnvrtc.so), then `cudaHome`/lib64 when given, then
// /usr/local/cuda/lib64.
std::vector<std::string> nvrtcLibraryCandidates(std::string_view cudaHome);
// The same for the knobs: MOEJIT_NVRTC first when set, then the search above
// with CUDA_HOME.
std::vector<std::string> nvrtcLibraryCandidates(const Knobs &knobs);

// The loaded NVRTC library; shared by everything that compiles with it.
class Nvrtc {
public:
  // dlopen()s the first candidate that loads and resolves every entry.
  // Throws Error listing every candidate tried (and why each failed) when
  // none does.
  static std::shared_ptr<const Nvrtc> load(const std::vector<std::string> &candidates);

  Nvrtc(const Nvrtc &) = delete;
  Nvrtc &operator=(const Nvrtc &) = delete;
  ~Nvrtc();

  // Calls `entry` and throws Error "<call> failed: <NVRTC message>" unless
  // it succeeds.
  template <class... Params, class... Args>
  void call(const NvrtcEntry<nvrtcResult (*)(Params...)> &entry, Args &&...args) const {
    check(entry.fn(std::forward<Args>(args)...), entry.name);
  }
  void check(nvrtcResult result, const char *call) const;

  const std::string &libraryPath() const noexcept { return path_; }
  int versionMajor() const noexcept { return major_; }
  int versionMinor() const noexcept { return minor_; }

#define MOEJIT_DECLARE_NVRTC_ENTRY(name) NvrtcEntry<decltype(&::name)> name{nullptr, #name};
  MOEJIT_NVRTC_ENTRIES(MOEJIT_DECLARE_NVRTC_ENTRY)
#undef MOEJIT_DECLARE_NVRTC_ENTRY
  NvrtcEntry<decltype(&::nvrtcGetErrorString)> nvrtcGetErrorString{nullptr, "nvrtcGetErrorString"};

private:
  Nvrtc(void *library, std::string path) : library_(library), path_(std::move(path)) {}

  void *library_ = nullptr;
  std::string path_;
  int major_ = 0, minor_ = 0;
};

} // namespace moejit
