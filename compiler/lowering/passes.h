// The lowering passes from the moe dialect to the LLVM dialect.
#pragma once

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/Pass.h"

#include <memory>

namespace moejit {

#define GEN_PASS_DECL
#include "compiler/lowering/passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "compiler/lowering/passes.h.inc"

// The whole lowering from moe ops to a gpu.module in the LLVM and NVVM
// dialects, ready for translation to LLVM IR.
void buildMoeToLLVMPipeline(mlir::OpPassManager &pm);

// Registers the passes above and the "moe-to-llvm" pipeline (moejit-opt).
void registerMoeLoweringPipelines();

} // namespace moejit
