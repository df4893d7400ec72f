// The Hopper path is declared but not lowered yet; the pass says so.
// RUN: %moejit-opt %s -moe-lower-grouped-gemm -verify-diagnostics

// expected-error @below {{code path hopper is not implemented yet; use path = portable}}
moe.grouped_gemm @down_proj {
  varlen = #moe.varlen<m>, element_type = bf16, experts = 8 : i64,
  m = 0 : i64, n = 256 : i64, k = 512 : i64,
  a_k_contiguous = true, b_k_contiguous = false,
  epilogue = #moe.epilogue<scale_rows>, activation = #moe.activation<swiglu>,
  gate_up = #moe.gate_up<concatenated>, c_columns = 256 : i64,
  aux_columns = 0 : i64, tile = array<i64: 128, 128, 64>, stages = 3 : i64,
  warps = array<i64: 2, 2>, path = #moe.path<hopper>}
