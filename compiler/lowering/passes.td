#ifndef MOEJIT_LOWERING_PASSES_TD
#define MOEJIT_LOWERING_PASSES_TD

include "mlir/Pass/PassBase.td"

def MoeLowerGroupedGemm : Pass<"moe-lower-grouped-gemm", "::mlir::ModuleOp"> {
  let summary = "Lower moe.grouped_gemm ops to GPU kernels";
  let description = [{
    Replaces every `moe.grouped_gemm` with a `gpu.func` kernel of the same
    name in the `gpu.module @moejit_kernels`, with the parameters of
    docs/kernel-abi.md (memrefs of static shape, so that the bare-pointer
    calling convention turns them into plain pointers). The kernel body is
    built with scf, arith, memref, vector, gpu, nvgpu and nvvm ops along the
    code path named by the op's `path` attribute.
  }];
  let dependentDialects = [
    "::mlir::arith::ArithDialect", "::mlir::gpu::GPUDialect",
    "::mlir::LLVM::LLVMDialect", "::mlir::memref::MemRefDialect",
    "::mlir::NVVM::NVVMDialect", "::mlir::nvgpu::NVGPUDialect",
    "::mlir::scf::SCFDialect", "::mlir::vector::VectorDialect"
  ];
}

def MoeLowerGroupedGemmHopper
    : Pass<"moe-lower-grouped-gemm-hopper", "::mlir::ModuleOp"> {
  let summary = "Lower moe.grouped_gemm ops of the hopper path to wgmma kernels";
  let description = [{
    Replaces every `moe.grouped_gemm` with `path = #moe.path<hopper>` by a
    `gpu.func` kernel with the parameters of docs/kernel-abi.md: cp.async
    copies into 128B-swizzled shared memory stages and `nvvm.wgmma.mma_async`
    m64nNk16 with fp32 accumulators (sm_90a). Ops of other paths are left for
    moe-lower-grouped-gemm, which runs after it.
  }];
  let dependentDialects = [
    "::mlir::arith::ArithDialect", "::mlir::gpu::GPUDialect",
    "::mlir::LLVM::LLVMDialect", "::mlir::memref::MemRefDialect",
    "::mlir::NVVM::NVVMDialect", "::mlir::nvgpu::NVGPUDialect",
    "::mlir::scf::SCFDialect", "::mlir::vector::VectorDialect"
  ];
}

def MoeExternDynamicSharedMemory
    : Pass<"moe-extern-dynamic-shared-memory", "::mlir::gpu::GPUModuleOp"> {
  let summary = "Declare the dynamic shared memory buffer as extern and "
                "pass the tensor map by value";
  let description = [{
    `gpu.dynamic_shared_memory` lowers to an internal zero-sized global in
    address space 3, which the NVPTX backend demotes to a one-byte static
    `.shared` variable. Giving it external linkage makes it the
    `.extern .shared .b8 name[]` array that PTX uses for dynamic shared
    memory. The kernels' tensor-map parameter (docs/kernel-abi.md, a
    pointer aligned to 64) becomes a 128-byte by-value parameter marked
    `nvvm.grid_constant`: PTX `.param .align 64 .b8 name[128]`, whose
    address TMA instructions take. Runs after convert-gpu-to-nvvm, which
    drops such argument attributes of gpu.func.
  }];
  let dependentDialects = ["::mlir::LLVM::LLVMDialect"];
}

#endif // MOEJIT_LOWERING_PASSES_TD
