// The whole moe -> LLVM/NVVM dialect pipeline: bare pointers, extern dynamic
// shared memory, cp.async, ldmatrix, mma and the dS atomics of dH.
// RUN: %moejit-opt %s -moe-to-llvm | FileCheck %s

// CHECK: gpu.module @moejit_kernels
// CHECK: llvm.mlir.global external @__dynamic_shmem__0() {addr_space = 3 : i32
// CHECK: llvm.func @dh(%{{.*}}: !llvm.ptr, %{{.*}}: !llvm.ptr, %{{.*}}: !llvm.ptr, %{{.*}}: !llvm.ptr, %{{.*}}: !llvm.ptr, %{{.*}}: !llvm.ptr, %{{.*}}: !llvm.ptr, %{{.*}}: !llvm.ptr, %{{.*}}: i32, %{{.*}}: !llvm.ptr {llvm.align = 64 : i64, llvm.byval = !llvm.array<16 x i64>, nvvm.grid_constant})
// CHECK-SAME: nvvm.kernel
// CHECK-SAME: nvvm.maxntid = array<i32: 64, 1, 1>
// CHECK: nvvm.cp.async.shared.global {{.*}}, 16, cache = cg
// CHECK: nvvm.ldmatrix
// CHECK: nvvm.mma.sync
// The dActivation loop keeps its request for full unrolling.
// CHECK: llvm.br {{.*}} {loop_annotation = #{{.+}}}
// CHECK: nvvm.shfl.sync bfly
// CHECK: llvm.atomicrmw fadd
// CHECK-NOT: nvgpu.
// CHECK-NOT: memref.
// CHECK-NOT: scf.
moe.grouped_gemm @dh {
  varlen = #moe.varlen<m>, element_type = bf16, experts = 4 : i64,
  m = 0 : i64, n = 64 : i64, k = 128 : i64,
  a_k_contiguous = true, b_k_contiguous = true, gather_a,
  epilogue = #moe.epilogue<d_activation>, activation = #moe.activation<swiglu>,
  gate_up = #moe.gate_up<interleaved>, c_columns = 128 : i64,
  aux_columns = 128 : i64, tile = array<i64: 32, 64, 32>, stages = 2 : i64,
  warps = array<i64: 1, 2>, path = #moe.path<portable>}
