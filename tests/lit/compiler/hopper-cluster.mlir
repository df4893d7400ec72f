// cluster_m = 2: the kernel requires clusters of two CTAs along x; each CTA
// takes every other tile.m rows of a cluster tile, loads its half of the B
// tile by TMA and multicasts it to both CTAs, and each consumer warp hands
// a stage back on the empty barriers of both CTAs (mapa + arrive).
// RUN: %moejit-opt %s -moe-lower-grouped-gemm-hopper | FileCheck %s

// CHECK: gpu.func @up_proj({{.*}}) kernel
// CHECK-SAME: nvvm.cluster_dim = array<i32: 2, 1, 1>
// Empty barriers count the consumer warps of both CTAs; the barriers are
// fenced for the cluster and the cluster meets before any copy.
// CHECK-COUNT-4: nvvm.mbarrier.init {{.*}}, %c16_i32
// CHECK: nvvm.fence.mbarrier.init
// CHECK: nvvm.cluster.arrive
// CHECK: nvvm.cluster.wait
// Producer: its half of the gate/up blocks (2 of 4), multicast to 0b11.
// CHECK: nvvm.mbarrier.arrive.expect_tx
// CHECK: arith.constant 3 : i16
// CHECK-COUNT-2: nvvm.cp.async.bulk.tensor.shared.cluster.global {{.*}} multicast_mask =
// CHECK-NOT: nvvm.cp.async.bulk.tensor.shared.cluster.global
// CHECK: nvvm.cp.async.mbarrier.arrive
// Consumer: releases on the barrier of CTA 0 and of CTA 1.
// CHECK: nvvm.mapa {{.*}} -> !llvm.ptr<7>
// CHECK: nvvm.mbarrier.arrive {{.*}} : !llvm.ptr<7>
// CHECK: nvvm.mapa {{.*}} -> !llvm.ptr<7>
// CHECK: nvvm.mbarrier.arrive {{.*}} : !llvm.ptr<7>
// No CTA leaves while the other may still arrive on its barriers.
// CHECK: nvvm.cluster.arrive
// CHECK: nvvm.cluster.wait
// CHECK: gpu.return

moe.grouped_gemm @up_proj {
  varlen = #moe.varlen<m>, element_type = bf16, experts = 8 : i64,
  m = 0 : i64, n = 1024 : i64, k = 256 : i64,
  a_k_contiguous = true, b_k_contiguous = false, gather_a,
  epilogue = #moe.epilogue<act_forward>, activation = #moe.activation<swiglu>,
  gate_up = #moe.gate_up<concatenated>, c_columns = 1024 : i64,
  aux_columns = 512 : i64, tile = array<i64: 128, 256, 64>, stages = 4 : i64,
  warps = array<i64: 2, 4>, path = #moe.path<hopper>, cluster_m = 2 : i64}
