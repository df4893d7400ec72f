// What a grouped GEMM's launch needs, and the checks on a host's arguments.
// Pure functions of the problem: testable without a GPU.
#pragma once

#include "moejit/moejit.h"
#include "moejit/problem.h"

#include <string_view>

namespace moejit {

// The optional operands `problem`'s kernel reads or writes.
GemmOperands requiredOperands(const GemmProblem &problem);

// Throws Error naming the first bad argument: a null operand the kernel
// needs, a matrix pointer not 16-byte aligned (the kernel's 16-byte cp.async
// and vector stores), an int32/float vector not 4-byte aligned, totalRows
// negative or over INT32_MAX (the ABI's int32).
void checkLaunchArgs(const GemmProblem &problem, const GemmArgs &args, std::string_view kernelName);

} // namespace moejit
