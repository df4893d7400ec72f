// The moe dialect: grouped-GEMM kernels of Mixture-of-Experts layers.
#pragma once

#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/Dialect.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/SymbolTable.h"

#include "compiler/dialect/moe_enums.h.inc"

#include "compiler/dialect/moe_dialect.h.inc"

#define GET_ATTRDEF_CLASSES
#include "compiler/dialect/moe_attrs.h.inc"

#define GET_OP_CLASSES
#include "compiler/dialect/moe_ops.h.inc"
