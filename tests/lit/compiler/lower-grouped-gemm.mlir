// moe-lower-grouped-gemm builds a gpu.func with the kernel ABI and the
// portable (cp.async + ldmatrix + mma.sync) body.
// RUN: %moejit-opt %s -moe-lower-grouped-gemm | FileCheck %s

// CHECK-DAG: #[[UNROLL:.+]] = #llvm.loop_unroll<full = true>
// CHECK-DAG: #[[LOOP:.+]] = #llvm.loop_annotation<unroll = #[[UNROLL]]>
// CHECK: module attributes {gpu.container_module}
// CHECK: gpu.module @moejit_kernels
// CHECK: gpu.func @up_proj(%{{.*}}: memref<{{[0-9]+}}xbf16>, %{{.*}}: memref<{{[0-9]+}}xbf16>, %{{.*}}: memref<{{[0-9]+}}xbf16>, %{{.*}}: memref<{{[0-9]+}}xbf16>, %{{.*}}: memref<{{[0-9]+}}xbf16>, %{{.*}}: memref<{{[0-9]+}}xi32>, %{{.*}}: memref<{{[0-9]+}}xi32>, %{{.*}}: memref<{{[0-9]+}}xf32>, %{{.*}}: i32, %{{.*}}: !llvm.ptr {llvm.align = 64 : i64}) kernel
// CHECK-SAME: known_block_size = array<i32: 128, 1, 1>
// CHECK: gpu.dynamic_shared_memory
// CHECK: memref.view {{.*}} to memref<3x128x72xbf16, #gpu.address_space<workgroup>>
// CHECK: memref.view {{.*}} to memref<3x64x136xbf16, #gpu.address_space<workgroup>>
// Varlen-M: block x is (slot, N tile), N fastest; each warp finds the
// slot's expert with a scan over 32 experts at a time.
// CHECK: gpu.block_id x
// CHECK: gpu.shuffle up
// CHECK: nvvm.redux.sync add
// Gathered rows of A.
// CHECK: memref.load %arg6
// CHECK: nvgpu.device_async_copy {{.*}}, 8, %{{.*}} {bypassL1}
// CHECK: nvvm.cp.async.commit.group
// CHECK: scf.for
// CHECK: nvvm.cp.async.wait.group 1
// CHECK: gpu.barrier
// CHECK: nvgpu.ldmatrix {{.*}} {numTiles = 4 : i32, transpose = false} : memref<3x128x72xbf16
// CHECK: nvgpu.ldmatrix {{.*}} {numTiles = 4 : i32, transpose = true} : memref<3x64x136xbf16
// CHECK: nvvm.mma.sync {{.*}} multiplicandAPtxType = #nvvm.mma_type<bf16>
// CHECK-SAME: shape = #nvvm.shape<m = 16, n = 8, k = 16>
// CHECK: scf.yield
// CHECK: nvvm.cp.async.wait.group 0
// SwiGLU epilogue: one copy per row, in a loop over the n8 blocks that
// LLVM unrolls fully; the blocks' offsets and accumulators are elements of
// vectors. H and act(H) stores.
// CHECK: vector.from_elements {{.*}} : vector<4xindex>
// CHECK: vector.from_elements {{.*}} : vector<4xf32>
// CHECK: scf.for
// CHECK: vector.extract
// CHECK: vector.store
// CHECK: tanh.approx.f32
// CHECK: vector.store
// CHECK: } {loop_annotation = #[[LOOP]]}
// CHECK: gpu.return
// CHECK-NOT: moe.grouped_gemm
moe.grouped_gemm @up_proj {
  varlen = #moe.varlen<m>, element_type = bf16, experts = 8 : i64,
  m = 0 : i64, n = 256 : i64, k = 512 : i64,
  a_k_contiguous = true, b_k_contiguous = false, gather_a,
  epilogue = #moe.epilogue<act_forward>, activation = #moe.activation<swiglu>,
  gate_up = #moe.gate_up<concatenated>, c_columns = 256 : i64,
  aux_columns = 128 : i64, tile = array<i64: 128, 128, 64>, stages = 3 : i64,
  warps = array<i64: 2, 2>, path = #moe.path<portable>}
