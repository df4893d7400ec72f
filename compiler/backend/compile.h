// The compiler's entry point: grouped-GEMM problems in, PTX (or an earlier
// stage) out. No MLIR or LLVM type crosses this header.
#pragma once

#include "moejit/problem.h"
#include "moejit/spec.h"

#include <string>
#include <vector>

namespace moejit {

enum class EmitStage {
  Mlir, // the moe dialect as built from the problems
  Llvm, // LLVM IR of the kernel module
  Ptx,
};

struct CompileOptions {
  Target target;
  EmitStage stage = EmitStage::Ptx;
  // A pass argument (e.g. "moe-lower-grouped-gemm"); the IR after each run of
  // that pass is appended to CompileOutput::dumps.
  std::string dumpAfter;
  // LLVM's optimisation level (0-3) for the IR pipeline and NVPTX codegen.
  // At 0 the epilogue loops, which ask LLVM to unroll them, stay loops and
  // index the accumulators dynamically (local memory): for debugging only.
  int llvmOptLevel = 3;
};

// Wall time of each stage of one compileGemms call, in milliseconds (0 for
// stages that did not run); summed over the kernels where they were
// compiled on parallel threads.
struct CompileStageTimes {
  double build = 0;     // MLIR context and the verified moe module
  double lower = 0;     // MLIR pass pipeline to the LLVM/NVVM dialects
  double translate = 0; // LLVM dialect -> LLVM IR
  double optimize = 0;  // LLVM IR optimisation pipeline
  double codegen = 0;   // NVPTX instruction selection and PTX printing
};

struct CompileOutput {
  std::string text;
  std::string dumps;
  std::vector<std::string> kernelNames;
  CompileStageTimes times;
};

// Builds one module with one kernel per problem and runs the pipeline to the
// asked stage (to PTX, the kernels are compiled on parallel threads and
// their PTX merged). Returns false and sets `error` (with MLIR's
// diagnostics) on failure. Thread-safe: every compile has its own MLIR and
// LLVM contexts.
bool compileGemms(const std::vector<GemmProblem> &problems,
                  const CompileOptions &options, CompileOutput &out,
                  std::string &error);

} // namespace moejit
