// The lowering pipeline from moe ops to the LLVM/NVVM dialects, and the
// small pass that fixes up the dynamic shared memory declaration.
#include "compiler/lowering/passes.h"
#include "compiler/lowering/kernel_common.h"
#include "moejit/problem.h"

#include "mlir/Conversion/GPUToNVVM/GPUToNVVMPass.h"
#include "mlir/Conversion/NVGPUToNVVM/NVGPUToNVVM.h"
#include "mlir/Conversion/NVVMToLLVM/NVVMToLLVM.h"
#include "mlir/Conversion/ReconcileUnrealizedCasts/ReconcileUnrealizedCasts.h"
#include "mlir/Conversion/SCFToControlFlow/SCFToControlFlow.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/NVGPU/IR/NVGPUDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"

namespace moejit {

#define GEN_PASS_DEF_MOEEXTERNDYNAMICSHAREDMEMORY
#include "compiler/lowering/passes.h.inc"

namespace {

struct MoeExternDynamicSharedMemoryPass
    : impl::MoeExternDynamicSharedMemoryBase<MoeExternDynamicSharedMemoryPass> {
  void runOnOperation() override {
    constexpr unsigned kSharedAddressSpace = 3;
    getOperation().walk([](mlir::LLVM::GlobalOp global) {
      auto array = mlir::dyn_cast<mlir::LLVM::LLVMArrayType>(global.getType());
      if (global.getAddrSpace() != kSharedAddressSpace || !array ||
          array.getNumElements() != 0 || global.getValueOrNull() ||
          global.getInitializerBlock())
        return;
      global.setLinkage(mlir::LLVM::Linkage::External);
    });
    getOperation().walk([](mlir::LLVM::LLVMFuncOp func) {
      if (!func->hasAttr(mlir::NVVM::NVVMDialect::getKernelFuncAttrName()) ||
          func.getNumArguments() < static_cast<unsigned>(KernelArg::Count))
        return;
      mlir::MLIRContext *ctx = func.getContext();
      auto mapType = mlir::LLVM::LLVMArrayType::get(mlir::IntegerType::get(ctx, 64),
                                                    lowering::kTensorMapBytes / 8);
      for (KernelArg map : lowering::kTensorMapArgs) {
        const unsigned slot = static_cast<unsigned>(map);
        func.setArgAttr(slot, mlir::LLVM::LLVMDialect::getByValAttrName(),
                        mlir::TypeAttr::get(mapType));
        func.setArgAttr(slot, mlir::NVVM::NVVMDialect::getGridConstantAttrName(),
                        mlir::UnitAttr::get(ctx));
      }
    });
  }
};

} // namespace

void buildMoeToLLVMPipeline(mlir::OpPassManager &pm) {
  pm.addPass(createMoeLowerGroupedGemmHopper());
  pm.addPass(createMoeLowerGroupedGemm());
  mlir::OpPassManager &kernels = pm.nest<mlir::gpu::GPUModuleOp>();
  kernels.addPass(mlir::createConvertNVGPUToNVVMPass());
  kernels.addPass(mlir::createSCFToControlFlowPass());
  // No expand-strided-metadata: the kernels use no subviews or reshapes
  // (memref.view and the loads lower directly), and it cost as much as a
  // conversion pass. convert-gpu-to-nvvm fails loudly should one appear.
  mlir::ConvertGpuOpsToNVVMOpsOptions gpuToNvvm;
  gpuToNvvm.useBarePtrCallConv = true;
  kernels.addPass(mlir::createConvertGpuOpsToNVVMOps(gpuToNvvm));
  kernels.addPass(mlir::createConvertNVVMToLLVMPass());
  kernels.addPass(createMoeExternDynamicSharedMemory());
  // No canonicalize/CSE here: LLVM's pipeline does the same clean-up right
  // after, and the PTX is identical without them.
  kernels.addPass(mlir::createReconcileUnrealizedCastsPass());
}

void registerMoeLoweringPipelines() {
  registerMoeLoweringPasses();
  mlir::PassPipelineRegistration<>(
      "moe-to-llvm",
      "Lower moe.grouped_gemm ops to a gpu.module in the LLVM/NVVM dialects",
      buildMoeToLLVMPipeline);
}

} // namespace moejit
