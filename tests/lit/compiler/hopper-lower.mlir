// moe-lower-grouped-gemm-hopper builds the sm_90a kernels: cp.async copies
// into 128B-swizzled stages, wgmma.mma_async m64nNk16 with fp32
// accumulators, the portable epilogues. Ops of the portable path are left
// alone for moe-lower-grouped-gemm.
// RUN: %moejit-opt %s -moe-lower-grouped-gemm-hopper | FileCheck %s

// CHECK: module attributes {gpu.container_module}
// CHECK: moe.grouped_gemm @dw1
// CHECK-SAME: path = #moe.path<portable>
// CHECK: gpu.module @moejit_kernels

// Up-projection: gathered A, N-contiguous W1 (transposed B), SwiGLU.
// CHECK: gpu.func @up_proj({{.*}}) kernel
// CHECK-SAME: known_block_size = array<i32: 256, 1, 1>
// CHECK: gpu.dynamic_shared_memory
// CHECK: memref.extract_aligned_pointer_as_index
// CHECK: memref.view {{.*}} to memref<65536xbf16, #gpu.address_space<workgroup>>
// CHECK: scf.while
// CHECK: arith.xori
// CHECK: memref.load %arg6
// CHECK: nvgpu.device_async_copy {{.*}}, 8, %{{.*}} {bypassL1}
// CHECK: nvvm.cp.async.commit.group
// CHECK: scf.for
// CHECK: nvvm.cp.async.wait.group 1
// CHECK: nvvm.fence.proxy {kind = #nvvm.proxy_kind<async.shared>, space = #nvvm.shared_space<cta>}
// CHECK: gpu.barrier
// CHECK: nvvm.wgmma.fence.aligned
// CHECK-COUNT-4: nvvm.wgmma.mma_async {{.*}} <m = 64, n = 128, k = 16>, D[<f32>, <one>], A[<bf16>, <one>, <row>], B[<bf16>, <one>, <row>]
// CHECK: nvvm.wgmma.commit.group.sync.aligned
// CHECK: nvvm.wgmma.wait.group.sync.aligned 1
// CHECK: scf.yield
// CHECK: nvvm.wgmma.wait.group.sync.aligned 0
// CHECK: ex2.approx.ftz.f32
// CHECK: vector.store
// CHECK: gpu.return

// Input gradient: K-contiguous W1 used as W1^T (B not transposed).
// CHECK: gpu.func @dx(
// CHECK: nvvm.wgmma.mma_async {{.*}} <m = 64, n = 128, k = 16>, D[<f32>, <one>], A[<bf16>, <one>, <row>], B[<bf16>, <one>, <col>]

moe.grouped_gemm @up_proj {
  varlen = #moe.varlen<m>, element_type = bf16, experts = 8 : i64,
  m = 0 : i64, n = 1024 : i64, k = 256 : i64,
  a_k_contiguous = true, b_k_contiguous = false, gather_a,
  epilogue = #moe.epilogue<act_forward>, activation = #moe.activation<swiglu>,
  gate_up = #moe.gate_up<concatenated>, c_columns = 1024 : i64,
  aux_columns = 512 : i64, tile = array<i64: 128, 128, 64>, stages = 4 : i64,
  warps = array<i64: 2, 2>, path = #moe.path<hopper>}

moe.grouped_gemm @dx {
  varlen = #moe.varlen<m>, element_type = bf16, experts = 8 : i64,
  m = 0 : i64, n = 256 : i64, k = 1024 : i64,
  a_k_contiguous = true, b_k_contiguous = true,
  epilogue = #moe.epilogue<store>, activation = #moe.activation<swiglu>,
  gate_up = #moe.gate_up<concatenated>, c_columns = 256 : i64,
  aux_columns = 0 : i64, tile = array<i64: 128, 128, 64>, stages = 4 : i64,
  warps = array<i64: 2, 2>, path = #moe.path<hopper>}

moe.grouped_gemm @dw1 {
  varlen = #moe.varlen<k>, element_type = bf16, experts = 8 : i64,
  m = 256 : i64, n = 1024 : i64, k = 0 : i64,
  a_k_contiguous = false, b_k_contiguous = false, gather_a,
  epilogue = #moe.epilogue<store>, activation = #moe.activation<swiglu>,
  gate_up = #moe.gate_up<concatenated>, c_columns = 1024 : i64,
  aux_columns = 0 : i64, tile = array<i64: 128, 128, 64>, stages = 3 : i64,
  warps = array<i64: 2, 2>, path = #moe.path<portable>}
