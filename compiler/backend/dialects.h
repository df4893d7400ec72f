// The dialects, LLVM-lowering interfaces and LLVM IR translations that the
// moejit pipeline needs in its MLIRContext (shared by compileGemms and
// moejit-opt).
#pragma once

#include "mlir/IR/DialectRegistry.h"

namespace moejit {

void registerCompilerDialects(mlir::DialectRegistry &registry);

} // namespace moejit
