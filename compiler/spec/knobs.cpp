#include "moejit/knobs.h"

#include <cstdlib>
#include <stdexcept>
#include <string>

namespace moejit {
namespace {

const char *getEnv(std::string_view name) {
  return std::getenv(std::string(name).c_str());
}

bool parseBool(std::string_view name, const char *value, bool fallback) {
  if (!value || !*value)
    return fallback;
  const std::string v(value);
  if (v == "1" || v == "true" || v == "on" || v == "yes")
    return true;
  if (v == "0" || v == "false" || v == "off" || v == "no")
    return false;
  throw std::invalid_argument(std::string(name) + "='" + v +
                              "' is not a boolean; use 1/0, true/false, on/off "
                              "or yes/no");
}

std::string defaultCacheDir() {
  if (const char *dir = getEnv("MOEJIT_CACHE_DIR"); dir && *dir)
    return dir;
  if (const char *xdg = getEnv("XDG_CACHE_HOME"); xdg && *xdg)
    return std::string(xdg) + "/moejit";
  if (const char *home = getEnv("HOME"); home && *home)
    return std::string(home) + "/.cache/moejit";
  return ".moejit-cache";
}

} // namespace

const std::vector<KnobInfo> &Knobs::registry() {
  static const std::vector<KnobInfo> knobs = {
      {"MOEJIT_CACHE_DIR", "path", "$XDG_CACHE_HOME/moejit, else ~/.cache/moejit",
       "directory of the on-disk kernel cache"},
      {"MOEJIT_STRICT", "bool", "0",
       "1: a kernel-cache miss is an error instead of a compile (serving)"},
      {"MOEJIT_ARCH", "string", "the GPU present, else sm_90a",
       "default target architecture of compile, check and precompile"},
      {"MOEJIT_CUDA_DRIVER", "path", "libcuda.so.1",
       "the CUDA driver library loaded with dlopen"},
      {"MOEJIT_NVRTC", "path", "libnvrtc.so.13, libnvrtc.so, then under CUDA_HOME",
       "the NVRTC library loaded with dlopen for the layer kernels"},
      {"CUDA_HOME", "path", "/usr/local/cuda", "CUDA toolkit searched for libnvrtc and ptxas"},
      {"MOEJIT_PTXAS", "path", "$CUDA_HOME/bin/ptxas when present",
       "ptxas that assembles each compiled module into a cubin kept in the kernel cache; "
       "off: leave the PTX to the driver's JIT at every load"},
      {"MOEJIT_JIT_LOG", "bool", "0",
       "1: print the driver JIT's log of each module loaded (registers, spills) to stderr"},
      {"MOEJIT_TUNING_DB", "path", "(none)",
       "tuning database written by `moejit tune`: GEMMs whose schedule a spec leaves open take "
       "the schedule measured fastest for their shape on this GPU"},
  };
  return knobs;
}

Knobs Knobs::fromEnvironment() {
  Knobs k;
  k.cacheDir = defaultCacheDir();
  k.strict = parseBool("MOEJIT_STRICT", getEnv("MOEJIT_STRICT"), false);
  if (const char *arch = getEnv("MOEJIT_ARCH"))
    k.arch = arch;
  const char *driver = getEnv("MOEJIT_CUDA_DRIVER");
  k.cudaDriver = driver && *driver ? driver : "libcuda.so.1";
  if (const char *nvrtc = getEnv("MOEJIT_NVRTC"))
    k.nvrtc = nvrtc;
  const char *cudaHome = getEnv("CUDA_HOME");
  k.cudaHome = cudaHome && *cudaHome ? cudaHome : "/usr/local/cuda";
  if (const char *ptxas = getEnv("MOEJIT_PTXAS"))
    k.ptxas = ptxas;
  k.jitLog = parseBool("MOEJIT_JIT_LOG", getEnv("MOEJIT_JIT_LOG"), false);
  if (const char *tuningDb = getEnv("MOEJIT_TUNING_DB"))
    k.tuningDb = tuningDb;
  return k;
}

std::vector<std::pair<std::string, std::string>> Knobs::describe() const {
  std::vector<std::pair<std::string, std::string>> out;
  for (const KnobInfo &info : registry()) {
    const char *raw = getEnv(info.name);
    std::string value = raw ? std::string(raw) : std::string("(unset)");
    if (info.name == "MOEJIT_CACHE_DIR")
      value += " -> " + cacheDir;
    out.emplace_back(std::string(info.name), value);
  }
  return out;
}

} // namespace moejit
