// Whole-program cubins from the toolkit's ptxas, so that a kernel's PTX is
// assembled once, when it is compiled, and every later load is a plain
// cubin load instead of the driver's JIT (about 0.4 s per Hopper kernel).
//
// ptxas runs as a separate process with `--split-compile=0`: the kernels of
// one module are assembled in parallel, one thread per kernel. It must be a
// whole-program compile (no -c): in relocatable mode ptxas ignores
// setmaxnreg and the Hopper kernels spill (bench/HOPPER_NOTES.md, step 6).
#pragma once

#include "moejit/knobs.h"

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace moejit {

// The ptxas that MOEJIT_PTXAS names, else $CUDA_HOME/bin/ptxas when that is
// an executable file; nullopt when MOEJIT_PTXAS is "off" or none is found
// (the PTX is then left to the driver's JIT). Throws moejit::Error when
// MOEJIT_PTXAS names a file that is not executable.
std::optional<std::string> findPtxas(const Knobs &knobs);

// Assembles `ptx` for `arch` (e.g. "sm_90a") with the ptxas at `ptxasPath`
// and returns the cubin. Throws moejit::Error with ptxas's exit status and
// log when it fails.
std::vector<char> assembleCubin(const std::string &ptxasPath, std::string_view ptx,
                                const std::string &arch);

} // namespace moejit
