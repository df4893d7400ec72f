// TMA stores: the cooperative consumers of a whole 64-row block stage their
// fragments with stmatrix (128B swizzle), fence them for the async proxy,
// meet at their warpgroup's named barrier, and one thread stores the box by
// TMA (output_map, parameter 11) and commits it; it waits until the box
// before has been read (two buffers alternate). The last M tile of an
// expert (rows past its end) copies the box's valid rows out of the
// staging buffer with 16-byte loads and stores instead. The consumer waits
// for its stores to complete before the kernel ends.
// RUN: %moejit-opt %s -split-input-file -moe-lower-grouped-gemm-hopper | FileCheck %s

// CHECK-LABEL: gpu.func @down
// CHECK: nvvm.setmaxregister  increase 192
// CHECK: nvvm.wgmma.wait.group.sync.aligned 0
// CHECK: arith.cmpi sle
// CHECK: nvvm.cp.async.bulk.wait_group 0 {read}
// CHECK: nvvm.barrier id = %{{.*}} number_of_threads = %c128_i32
// CHECK: memref.load %arg7
// CHECK-COUNT-4: nvvm.stmatrix {{.*}} shape = #nvvm.ld_st_matrix_shape<m = 8, n = 8>} : !llvm.ptr<3>, i32, i32, i32, i32
// CHECK: nvvm.fence.proxy {kind = #nvvm.proxy_kind<async.shared>, space = #nvvm.shared_space<cta>}
// CHECK: nvvm.cp.async.bulk.wait_group 0 {read}
// CHECK: nvvm.barrier id = %{{.*}} number_of_threads = %c128_i32
// CHECK: scf.if
// CHECK: nvvm.cp.async.bulk.tensor.global.shared.cta %arg11
// CHECK: nvvm.cp.async.bulk.commit.group
// CHECK: } else {
// CHECK: llvm.load {{.*}} -> vector<4xi32>
// CHECK: vector.store
// CHECK-COUNT-12: nvvm.stmatrix
// CHECK: nvvm.cp.async.bulk.wait_group 0{{$}}
// CHECK: gpu.return
moe.grouped_gemm @down {
  varlen = #moe.varlen<m>, element_type = bf16, experts = 8 : i64,
  m = 0 : i64, n = 1024 : i64, k = 256 : i64,
  a_k_contiguous = true, b_k_contiguous = false,
  epilogue = #moe.epilogue<scale_rows>, activation = #moe.activation<swiglu>,
  gate_up = #moe.gate_up<concatenated>, c_columns = 1024 : i64,
  aux_columns = 0 : i64, tile = array<i64: 128, 256, 64>, stages = 4 : i64,
  warps = array<i64: 2, 4>, path = #moe.path<hopper>, tma_stores}

// -----

// The gated up-projection: H's gate and up boxes through output_map (only
// where C is not null), then act(H)'s through aux_map (parameter 12).
// CHECK-LABEL: gpu.func @up
// CHECK: memref.extract_aligned_pointer_as_index %arg2
// CHECK: nvvm.cp.async.bulk.tensor.global.shared.cta %arg11
// CHECK: nvvm.cp.async.bulk.tensor.global.shared.cta %arg11
// CHECK: tanh.approx.f32
// CHECK: nvvm.cp.async.bulk.tensor.global.shared.cta %arg12
// CHECK: nvvm.cp.async.bulk.tensor.global.shared.cta %arg12
// CHECK: } else {
moe.grouped_gemm @up {
  varlen = #moe.varlen<m>, element_type = bf16, experts = 8 : i64,
  m = 0 : i64, n = 1024 : i64, k = 512 : i64,
  a_k_contiguous = true, b_k_contiguous = false, gather_a,
  epilogue = #moe.epilogue<act_forward>, activation = #moe.activation<swiglu>,
  gate_up = #moe.gate_up<concatenated>, c_columns = 1024 : i64,
  aux_columns = 512 : i64, tile = array<i64: 128, 256, 64>, stages = 4 : i64,
  warps = array<i64: 2, 4>, path = #moe.path<hopper>, tma_stores}
