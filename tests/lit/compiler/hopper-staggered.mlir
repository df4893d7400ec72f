// Staggered epilogues: the cooperative 128 x 256 kernel (two consumer
// warpgroups, 64 rows each, both read every stage: empty count 8) whose
// consumers take turns on the epilogue. After its main loop (wait.group 0
// and the last stage's release) a consumer waits on its turn barrier, then
// stores, then arrives on the other's turn barrier (count 4: one arrive per
// warp), so one consumer's stores overlap the other's next main loop.
// RUN: %moejit-opt %s -moe-lower-grouped-gemm-hopper | FileCheck %s

// CHECK: gpu.func @down({{.*}}) kernel
// CHECK-SAME: known_block_size = array<i32: 384, 1, 1>
// CHECK: nvvm.mbarrier.init {{.*}}, %c8_i32
// CHECK: nvvm.mbarrier.init [[TURN0:%.*]], %c4_i32
// CHECK: nvvm.mbarrier.init [[TURN1:%.*]], %c4_i32
// CHECK: nvvm.setmaxregister  increase 192
// CHECK: scf.for {{.*}} iter_args
// CHECK: nvvm.wgmma.wait.group.sync.aligned 1
// CHECK: scf.yield
// CHECK: nvvm.wgmma.wait.group.sync.aligned 0
// CHECK: nvvm.mbarrier.arrive
// CHECK: nvvm.mbarrier.try_wait.parity
// CHECK: vector.store
// CHECK: nvvm.mbarrier.arrive
// CHECK-NEXT: }
// CHECK: gpu.return

moe.grouped_gemm @down {
  varlen = #moe.varlen<m>, element_type = bf16, experts = 8 : i64,
  m = 0 : i64, n = 512 : i64, k = 256 : i64,
  a_k_contiguous = true, b_k_contiguous = false,
  epilogue = #moe.epilogue<scale_rows>, activation = #moe.activation<swiglu>,
  gate_up = #moe.gate_up<concatenated>, c_columns = 512 : i64,
  aux_columns = 0 : i64, tile = array<i64: 128, 256, 64>, stages = 4 : i64,
  warps = array<i64: 2, 4>, path = #moe.path<hopper>, staggered_epilogues}
