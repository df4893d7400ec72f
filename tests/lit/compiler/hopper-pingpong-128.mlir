// Ping-pong with 128-row tiles: each consumer warpgroup owns a whole
// 128 x 128 tile and issues two m64 wgmmas per k16 step (rows 0-63 and
// 64-127 of the A stage, 8 KB apart), 8 per K tile; its epilogue covers
// both 64-row blocks. Stages are read by one consumer (empty count 4).
// RUN: %moejit-opt %s -moe-lower-grouped-gemm-hopper | FileCheck %s

// CHECK: gpu.func @down({{.*}}) kernel
// CHECK-SAME: known_block_size = array<i32: 384, 1, 1>
// CHECK: nvvm.mbarrier.init {{.*}}, %c1_i32
// CHECK: nvvm.mbarrier.init {{.*}}, %c4_i32
// CHECK: nvvm.setmaxregister  increase 192
// CHECK: arith.remui %{{.*}}, %c2
// CHECK: scf.for {{.*}} iter_args({{.*}}, {{.*}}) -> (!llvm.struct<({{.*}})>, !llvm.struct<({{.*}})>)
// CHECK: nvvm.mbarrier.try_wait.parity
// CHECK-COUNT-8: nvvm.wgmma.mma_async {{.*}} <m = 64, n = 128, k = 16>
// CHECK-NOT: nvvm.wgmma.mma_async
// CHECK: nvvm.wgmma.wait.group.sync.aligned 1
// CHECK: scf.yield
// CHECK: nvvm.wgmma.wait.group.sync.aligned 0
// CHECK: gpu.return

moe.grouped_gemm @down {
  varlen = #moe.varlen<m>, element_type = bf16, experts = 8 : i64,
  m = 0 : i64, n = 512 : i64, k = 256 : i64,
  a_k_contiguous = true, b_k_contiguous = false,
  epilogue = #moe.epilogue<scale_rows>, activation = #moe.activation<swiglu>,
  gate_up = #moe.gate_up<concatenated>, c_columns = 512 : i64,
  aux_columns = 0 : i64, tile = array<i64: 128, 128, 64>, stages = 6 : i64,
  warps = array<i64: 2, 2>, path = #moe.path<hopper>, ping_pong}
