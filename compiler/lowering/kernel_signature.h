// What every code path's lowering shares: the gpu.module that holds the
// kernels and the kernel signature of docs/kernel-abi.md.
#pragma once

#include "compiler/dialect/moe_dialect.h"
#include "moejit/problem.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/IR/BuiltinOps.h"

namespace moejit {

inline constexpr llvm::StringLiteral kKernelModuleName = "moejit_kernels";

// Global buffers are 1-D memrefs of a static extent no real buffer reaches:
// the bare-pointer calling convention needs a static shape, and indices are
// computed in 64 bits by the kernel itself.
inline constexpr int64_t kUnboundedExtent = int64_t{1} << 58;

// The kernel parameters, in the order of KernelArg.
struct KernelParams {
  mlir::Value a, b, c, auxIn, auxOut, offsets, gather, scale, totalRows;
};

inline mlir::gpu::GPUModuleOp getOrCreateKernelModule(mlir::ModuleOp module) {
  if (auto existing =
          module.lookupSymbol<mlir::gpu::GPUModuleOp>(kKernelModuleName))
    return existing;
  module->setAttr(mlir::gpu::GPUDialect::getContainerModuleAttrName(),
                  mlir::UnitAttr::get(module.getContext()));
  mlir::OpBuilder builder = mlir::OpBuilder::atBlockEnd(module.getBody());
  return mlir::gpu::GPUModuleOp::create(builder, module.getLoc(),
                                        kKernelModuleName);
}

// Creates the kernel of `op` (empty body) with `threads` threads per block
// and returns its parameters.
inline KernelParams createKernel(moe::GroupedGemmOp op,
                                 mlir::gpu::GPUModuleOp kernels,
                                 int64_t threads) {
  using namespace mlir;
  MLIRContext *ctx = op.getContext();
  auto buffer = [](Type element) {
    return MemRefType::get({kUnboundedExtent}, element);
  };
  Type element = op.getElementType();
  Type auxOut = op.getEpilogue() == moe::Epilogue::DActivation
                    ? Type(Float32Type::get(ctx))
                    : element;
  Type i32 = IntegerType::get(ctx, 32);
  SmallVector<Type> params = {buffer(element), buffer(element),
                              buffer(element), buffer(element),
                              buffer(auxOut),  buffer(i32),
                              buffer(i32),     buffer(Float32Type::get(ctx)),
                              i32};
  assert(params.size() == static_cast<size_t>(KernelArg::Count));
  OpBuilder builder = OpBuilder::atBlockEnd(kernels.getBody());
  auto func = gpu::GPUFuncOp::create(builder, op.getLoc(), op.getSymName(),
                                     FunctionType::get(ctx, params, {}));
  func->setAttr(gpu::GPUDialect::getKernelFuncAttrName(), UnitAttr::get(ctx));
  func.setKnownBlockSizeAttr(
      DenseI32ArrayAttr::get(ctx, {static_cast<int32_t>(threads), 1, 1}));
  Block &entry = func.getBody().front();
  return {entry.getArgument(0), entry.getArgument(1), entry.getArgument(2),
          entry.getArgument(3), entry.getArgument(4), entry.getArgument(5),
          entry.getArgument(6), entry.getArgument(7), entry.getArgument(8)};
}

} // namespace moejit
