// Every environment knob of moejit, in one typed registry. `moejit info`
// prints them all with their values.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace moejit {

struct KnobInfo {
  std::string_view name;     // environment variable
  std::string_view type;     // "path", "bool", "string"
  std::string_view fallback; // what applies when unset
  std::string_view help;
};

// The knobs, read once from the environment into typed fields.
struct Knobs {
  std::string cacheDir;     // resolved cache directory
  bool strict = false;      // a cache miss is an error instead of a compile
  std::string arch;         // default target arch; empty: the GPU present, else sm_90a
  std::string cudaDriver;   // library dlopen'ed for the CUDA driver API
  std::string nvrtc;        // libnvrtc to dlopen; empty: search the usual places
  std::string cudaHome;     // CUDA toolkit root searched for libnvrtc and ptxas
  std::string ptxas;        // ptxas for cubins; empty: $CUDA_HOME/bin/ptxas; "off": none
  bool jitLog = false;      // print the driver JIT's log of each loaded module
  std::string tuningDb;     // tuning database (moejit tune) for open schedules; empty: none

  // Reads the environment. Throws std::invalid_argument naming the variable
  // when a value does not parse (e.g. MOEJIT_STRICT=maybe).
  static Knobs fromEnvironment();

  static const std::vector<KnobInfo> &registry();
  // (name, value as set or "(unset)") for each knob in registry order.
  std::vector<std::pair<std::string, std::string>> describe() const;
};

} // namespace moejit
