// Ping-pong on the Hopper path: two consumer warpgroups own whole 64-row
// tiles and take turns. Each stage is read by one consumer (empty barriers
// count its 4 warps); two turn barriers (4 warps each) order the consumers'
// main loops; a consumer runs every other work item of its CTA.
// RUN: %moejit-opt %s -moe-lower-grouped-gemm-hopper | FileCheck %s

// CHECK: gpu.func @dx({{.*}}) kernel
// CHECK-SAME: known_block_size = array<i32: 384, 1, 1>
// CHECK: memref.view {{.*}} to memref<{{[0-9]+}}xbf16, #gpu.address_space<workgroup>>
// Full barriers: the TMA thread's expect_tx alone (A and B go by TMA).
// CHECK: nvvm.mbarrier.init {{.*}}, %c1_i32
// CHECK: nvvm.mbarrier.init {{.*}}, %c4_i32
// CHECK: nvvm.mbarrier.init {{.*}}, %c4_i32
// CHECK: gpu.barrier
// CHECK: nvvm.setmaxregister  decrease 120
// CHECK: nvvm.mbarrier.arrive.expect_tx
// CHECK: nvvm.cp.async.bulk.tensor.shared.cluster.global {{.*}} box[
// CHECK-NOT: nvvm.cp.async.mbarrier.arrive
// CHECK: nvvm.setmaxregister  increase 192
// CHECK: arith.remui %{{.*}}, %c2
// CHECK: scf.if
// CHECK: nvvm.mbarrier.try_wait.parity
// CHECK: scf.for
// CHECK: nvvm.mbarrier.try_wait.parity
// CHECK-COUNT-4: nvvm.wgmma.mma_async {{.*}} <m = 64, n = 256, k = 16>
// CHECK: nvvm.wgmma.wait.group.sync.aligned 1
// CHECK: scf.yield
// CHECK: nvvm.mbarrier.arrive
// CHECK: nvvm.wgmma.wait.group.sync.aligned 0
// CHECK: gpu.return

moe.grouped_gemm @dx {
  varlen = #moe.varlen<m>, element_type = bf16, experts = 8 : i64,
  m = 0 : i64, n = 256 : i64, k = 1024 : i64,
  a_k_contiguous = true, b_k_contiguous = true,
  epilogue = #moe.epilogue<store>, activation = #moe.activation<swiglu>,
  gate_up = #moe.gate_up<concatenated>, c_columns = 256 : i64,
  aux_columns = 0 : i64, tile = array<i64: 64, 256, 64>, stages = 5 : i64,
  warps = array<i64: 1, 4>, path = #moe.path<hopper>, ping_pong}
