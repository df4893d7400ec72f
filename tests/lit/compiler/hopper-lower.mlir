// moe-lower-grouped-gemm-hopper builds the sm_90a kernels: warp-specialised
// and persistent. Warpgroup 0 copies with cp.async into 128B-swizzled
// stages and signals "full" mbarriers; warpgroups 1.. wait on them, issue
// wgmma.mma_async m64nNk16 with fp32 accumulators, hand stages back on
// "empty" mbarriers and run the portable epilogues. Ops of the portable
// path are left alone for moe-lower-grouped-gemm.
// RUN: %moejit-opt %s -moe-lower-grouped-gemm-hopper | FileCheck %s

// CHECK: module attributes {gpu.container_module}
// CHECK: moe.grouped_gemm @dw1
// CHECK-SAME: path = #moe.path<portable>
// CHECK: gpu.module @moejit_kernels

// Up-projection: gathered A, N-contiguous W1 (transposed B), SwiGLU.
// A producer warpgroup and two consumer warpgroups.
// CHECK: gpu.func @up_proj({{.*}}) kernel
// CHECK-SAME: known_block_size = array<i32: 384, 1, 1>
// CHECK: gpu.dynamic_shared_memory
// CHECK: memref.extract_aligned_pointer_as_index
// CHECK: memref.view {{.*}} to memref<65536xbf16, #gpu.address_space<workgroup>>
// Four stages: full barriers count the 128 producer threads and the TMA
// thread's expect_tx, empty barriers the 8 consumer warps.
// CHECK-COUNT-4: nvvm.mbarrier.init {{.*}}, %c129_i32
// CHECK: gpu.barrier
// Producer: gives registers back, walks its tiles (grid-stride), waits for
// an empty stage, copies, arrives on the full barrier when the copies land.
// CHECK: nvvm.setmaxregister  decrease 120
// CHECK: gpu.grid_dim  x
// CHECK: scf.while
// CHECK: memref.load %arg6
// CHECK: arith.xori
// CHECK: scf.for
// CHECK: nvvm.mbarrier.try_wait.parity
// The gate and up halves of W1 by TMA: tile.n / 2 = 64 gate columns, then
// the same up columns (n / 2 = 512 further).
// CHECK: nvvm.mbarrier.arrive.expect_tx
// CHECK: nvvm.cp.async.bulk.tensor.shared.cluster.global {{.*}} box[
// CHECK: arith.addi %{{.*}}, %c512
// CHECK: nvvm.cp.async.bulk.tensor.shared.cluster.global {{.*}} box[
// CHECK: nvgpu.device_async_copy {{.*}}, 8, %{{.*}} {bypassL1}
// CHECK: nvvm.cp.async.mbarrier.arrive {{.*}} {noinc = true}
// CHECK: arith.addi %{{.*}}, %grid_dim_x
// CHECK: nvvm.cp.async.wait.group 0
// Consumers: take registers, wait for a full stage, fence the copies into
// the async proxy, wgmma, release the previous stage.
// CHECK: nvvm.setmaxregister  increase 192
// CHECK: scf.while
// CHECK: scf.for
// CHECK: nvvm.mbarrier.try_wait.parity
// CHECK: nvvm.fence.proxy {kind = #nvvm.proxy_kind<async.shared>, space = #nvvm.shared_space<cta>}
// CHECK: nvvm.wgmma.fence.aligned
// CHECK-COUNT-4: nvvm.wgmma.mma_async {{.*}} <m = 64, n = 128, k = 16>, D[<f32>, <one>], A[<bf16>, <one>, <row>], B[<bf16>, <one>, <row>]
// CHECK: nvvm.wgmma.commit.group.sync.aligned
// CHECK: nvvm.wgmma.wait.group.sync.aligned 1
// CHECK: nvvm.mbarrier.arrive
// CHECK: scf.yield
// CHECK: nvvm.wgmma.wait.group.sync.aligned 0
// CHECK: nvvm.mbarrier.arrive
// CHECK: tanh.approx.f32
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
