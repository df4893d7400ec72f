#include "runtime/api/launch_check.h"

#include <cstdint>
#include <cstdio>
#include <limits>
#include <string>

namespace moejit {

namespace {

constexpr uintptr_t kMatrixAlignment = 16;
constexpr uintptr_t kVectorAlignment = 4;

[[noreturn]] void fail(const GemmProblem &problem, std::string_view kernelName,
                       const std::string &what) {
  throw Error("launch of " + std::string(toString(problem.kind)) + " (kernel " +
              std::string(kernelName) + "): " + what);
}

void checkPointer(const GemmProblem &problem, std::string_view kernelName, const void *pointer,
                  const char *name, bool required, uintptr_t alignment) {
  if (!pointer) {
    if (required)
      fail(problem, kernelName,
           std::string("argument '") + name + "' is null; this GEMM needs it (docs/kernel-abi.md)");
    return;
  }
  const uintptr_t address = reinterpret_cast<uintptr_t>(pointer);
  if (address % alignment != 0) {
    char hex[32];
    std::snprintf(hex, sizeof hex, "0x%llx", static_cast<unsigned long long>(address));
    fail(problem, kernelName,
         std::string("argument '") + name + "' (" + hex + ") is not " + std::to_string(alignment) +
             "-byte aligned");
  }
}

} // namespace

GemmOperands requiredOperands(const GemmProblem &problem) {
  GemmOperands needs;
  needs.c = !(problem.epilogue == Epilogue::ActForward && problem.activation != Activation::None);
  needs.auxIn = problem.epilogue == Epilogue::DActivation;
  needs.auxOut =
      problem.epilogue == Epilogue::ActForward || problem.epilogue == Epilogue::DActivation;
  needs.gather = problem.gatherA || problem.gatherB;
  needs.scale = problem.epilogue == Epilogue::ScaleRows ||
                problem.epilogue == Epilogue::DActivation || problem.scaleBRows;
  return needs;
}

void checkLaunchArgs(const GemmProblem &problem, const GemmArgs &args,
                     std::string_view kernelName) {
  if (args.totalRows < 0)
    fail(problem, kernelName, "totalRows = " + std::to_string(args.totalRows) + " is negative");
  if (args.totalRows > std::numeric_limits<int32_t>::max())
    fail(problem, kernelName,
         "totalRows = " + std::to_string(args.totalRows) +
             " is over INT32_MAX (the kernel ABI's total_rows is int32); split the batch");
  const GemmOperands needs = requiredOperands(problem);
  checkPointer(problem, kernelName, args.a, "a", true, kMatrixAlignment);
  checkPointer(problem, kernelName, args.b, "b", true, kMatrixAlignment);
  checkPointer(problem, kernelName, args.c, "c", needs.c, kMatrixAlignment);
  checkPointer(problem, kernelName, args.auxIn, "auxIn", needs.auxIn, kMatrixAlignment);
  checkPointer(problem, kernelName, args.auxOut, "auxOut", needs.auxOut, kMatrixAlignment);
  checkPointer(problem, kernelName, args.offsets, "offsets", true, kVectorAlignment);
  checkPointer(problem, kernelName, args.gather, "gather", needs.gather, kVectorAlignment);
  checkPointer(problem, kernelName, args.scale, "scale", needs.scale, kVectorAlignment);
}

} // namespace moejit
