// Varlen-K (weight gradient): grid over (M tile, N tile, expert), K loop over
// the expert's rows, transposed ldmatrix for A, B rows scaled by the score.
// RUN: %moejit-opt %s -moe-lower-grouped-gemm | FileCheck %s

// CHECK: gpu.func @dw2
// CHECK-SAME: known_block_size = array<i32: 32, 1, 1>
// CHECK-DAG: gpu.block_id  x
// CHECK-DAG: gpu.block_id  y
// CHECK-DAG: gpu.block_id  z
// CHECK-NOT: scf.while
// CHECK: scf.for
// CHECK: nvvm.cp.async.wait.group 1
// Scaling of B's rows in shared memory by scale[row].
// CHECK: vector.load {{.*}} : memref<3x32x40xf16, #gpu.address_space<workgroup>>, vector<8xf16>
// CHECK: memref.load %arg7
// CHECK: arith.mulf {{.*}} : vector<8xf32>
// CHECK: vector.store {{.*}} : memref<3x32x40xf16, #gpu.address_space<workgroup>>, vector<8xf16>
// CHECK: gpu.barrier
// CHECK: nvgpu.ldmatrix {{.*}} {numTiles = 4 : i32, transpose = true} : memref<3x32x40xf16
// CHECK: nvvm.mma.sync {{.*}} : (vector<2xf16>, vector<2xf16>, f32)
moe.grouped_gemm @dw2 {
  varlen = #moe.varlen<k>, element_type = f16, experts = 4 : i64,
  m = 64 : i64, n = 64 : i64, k = 0 : i64,
  a_k_contiguous = false, b_k_contiguous = false, gather_b, scale_b_rows,
  epilogue = #moe.epilogue<store>, activation = #moe.activation<swiglu>,
  gate_up = #moe.gate_up<concatenated>, c_columns = 64 : i64,
  aux_columns = 0 : i64, tile = array<i64: 32, 32, 32>, stages = 3 : i64,
  warps = array<i64: 1, 1>, path = #moe.path<portable>}
