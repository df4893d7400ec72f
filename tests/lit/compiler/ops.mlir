// The moe dialect parses, verifies and prints back.
// RUN: %moejit-opt %s | %moejit-opt | FileCheck %s

// CHECK-LABEL: moe.grouped_gemm @up_proj
// CHECK-SAME: activation = #moe.activation<swiglu>
// CHECK-SAME: epilogue = #moe.epilogue<act_forward>
// CHECK-SAME: gather_a
// CHECK-SAME: path = #moe.path<portable>
// CHECK-SAME: varlen = #moe.varlen<m>
moe.grouped_gemm @up_proj {
  varlen = #moe.varlen<m>, element_type = bf16, experts = 8 : i64,
  m = 0 : i64, n = 256 : i64, k = 512 : i64,
  a_k_contiguous = true, b_k_contiguous = false, gather_a,
  epilogue = #moe.epilogue<act_forward>, activation = #moe.activation<swiglu>,
  gate_up = #moe.gate_up<concatenated>, c_columns = 256 : i64,
  aux_columns = 128 : i64, tile = array<i64: 128, 128, 64>, stages = 4 : i64,
  warps = array<i64: 2, 2>, path = #moe.path<portable>}

// CHECK-LABEL: moe.grouped_gemm @dw2
// CHECK-SAME: scale_b_rows
// CHECK-SAME: varlen = #moe.varlen<k>
moe.grouped_gemm @dw2 {
  varlen = #moe.varlen<k>, element_type = f16, experts = 8 : i64,
  m = 128 : i64, n = 512 : i64, k = 0 : i64,
  a_k_contiguous = false, b_k_contiguous = false, gather_b, scale_b_rows,
  epilogue = #moe.epilogue<store>, activation = #moe.activation<swiglu>,
  gate_up = #moe.gate_up<interleaved>, c_columns = 512 : i64,
  aux_columns = 0 : i64, tile = array<i64: 128, 128, 32>, stages = 3 : i64,
  warps = array<i64: 2, 2>, path = #moe.path<portable>}
