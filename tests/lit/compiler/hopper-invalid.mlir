// The hopper path says which GEMMs and tiles it covers.
// RUN: %moejit-opt %s -split-input-file -moe-lower-grouped-gemm-hopper -verify-diagnostics

// expected-error @below {{the hopper path covers varlen-M GEMMs with a K-contiguous A; use path = portable}}
moe.grouped_gemm @dw2 {
  varlen = #moe.varlen<k>, element_type = bf16, experts = 8 : i64,
  m = 256 : i64, n = 1024 : i64, k = 0 : i64,
  a_k_contiguous = false, b_k_contiguous = false,
  epilogue = #moe.epilogue<store>, activation = #moe.activation<swiglu>,
  gate_up = #moe.gate_up<concatenated>, c_columns = 1024 : i64,
  aux_columns = 0 : i64, tile = array<i64: 128, 128, 64>, stages = 3 : i64,
  warps = array<i64: 2, 2>, path = #moe.path<hopper>}

// -----

// expected-error @below {{the hopper path needs tile.m of 64 or 128, a 128-byte tile.k, tile.n a multiple of 64 up to 256 and at least 3 stages}}
moe.grouped_gemm @down_proj {
  varlen = #moe.varlen<m>, element_type = bf16, experts = 8 : i64,
  m = 0 : i64, n = 1024 : i64, k = 256 : i64,
  a_k_contiguous = true, b_k_contiguous = false,
  epilogue = #moe.epilogue<scale_rows>, activation = #moe.activation<swiglu>,
  gate_up = #moe.gate_up<concatenated>, c_columns = 1024 : i64,
  aux_columns = 0 : i64, tile = array<i64: 128, 96, 64>, stages = 4 : i64,
  warps = array<i64: 2, 2>, path = #moe.path<hopper>}

// -----

// 128 x 256 would need 256 accumulators per consumer thread.
// expected-error @+1 {{ping_pong needs path = hopper and tile m = 64, or 128 with tile n <= 128 (each consumer warpgroup owns a whole tile), got tile 128x256}}
moe.grouped_gemm @pingpong_tall {
  varlen = #moe.varlen<m>, element_type = bf16, experts = 8 : i64,
  m = 0 : i64, n = 256 : i64, k = 1024 : i64,
  a_k_contiguous = true, b_k_contiguous = true,
  epilogue = #moe.epilogue<store>, activation = #moe.activation<swiglu>,
  gate_up = #moe.gate_up<concatenated>, c_columns = 256 : i64,
  aux_columns = 0 : i64, tile = array<i64: 128, 256, 64>, stages = 4 : i64,
  warps = array<i64: 2, 4>, path = #moe.path<hopper>, ping_pong}

// -----

// expected-error @+1 {{raster_along_m needs path = hopper without ping_pong}}
moe.grouped_gemm @pingpong_bands {
  varlen = #moe.varlen<m>, element_type = bf16, experts = 8 : i64,
  m = 0 : i64, n = 1024 : i64, k = 256 : i64,
  a_k_contiguous = true, b_k_contiguous = false,
  epilogue = #moe.epilogue<store>, activation = #moe.activation<swiglu>,
  gate_up = #moe.gate_up<concatenated>, c_columns = 1024 : i64,
  aux_columns = 0 : i64, tile = array<i64: 64, 256, 64>, stages = 4 : i64,
  warps = array<i64: 1, 4>, path = #moe.path<hopper>, ping_pong, raster_along_m}

// -----

// Staggered epilogues take turns between the two consumers of a 128-row tile.
// expected-error @+1 {{staggered_epilogues needs path = hopper without ping_pong and tile m = 128 (two cooperative consumer warpgroups take turns on the epilogue), got tile 64x256}}
moe.grouped_gemm @staggered_short {
  varlen = #moe.varlen<m>, element_type = bf16, experts = 8 : i64,
  m = 0 : i64, n = 1024 : i64, k = 256 : i64,
  a_k_contiguous = true, b_k_contiguous = false,
  epilogue = #moe.epilogue<store>, activation = #moe.activation<swiglu>,
  gate_up = #moe.gate_up<concatenated>, c_columns = 1024 : i64,
  aux_columns = 0 : i64, tile = array<i64: 64, 256, 64>, stages = 4 : i64,
  warps = array<i64: 1, 4>, path = #moe.path<hopper>, staggered_epilogues}

// -----

// TMA stores need cooperative consumers (each stages 64 rows of one tile).
// expected-error @+1 {{tma_stores needs path = hopper with cooperative consumers and a store, scale_rows or gated forward epilogue with concatenated halves whose tile halves stay inside one half of H}}
moe.grouped_gemm @tma_pingpong {
  varlen = #moe.varlen<m>, element_type = bf16, experts = 8 : i64,
  m = 0 : i64, n = 1024 : i64, k = 256 : i64,
  a_k_contiguous = true, b_k_contiguous = false,
  epilogue = #moe.epilogue<scale_rows>, activation = #moe.activation<swiglu>,
  gate_up = #moe.gate_up<concatenated>, c_columns = 1024 : i64,
  aux_columns = 0 : i64, tile = array<i64: 64, 256, 64>, stages = 4 : i64,
  warps = array<i64: 1, 4>, path = #moe.path<hopper>, ping_pong, tma_stores}

// -----

// dActivation's epilogue reads H and sums rows: it keeps direct stores.
// expected-error @+1 {{tma_stores needs path = hopper}}
moe.grouped_gemm @tma_dh {
  varlen = #moe.varlen<m>, element_type = bf16, experts = 8 : i64,
  m = 0 : i64, n = 1024 : i64, k = 256 : i64,
  a_k_contiguous = true, b_k_contiguous = false,
  epilogue = #moe.epilogue<d_activation>, activation = #moe.activation<swiglu>,
  gate_up = #moe.gate_up<concatenated>, c_columns = 1024 : i64,
  aux_columns = 512 : i64, tile = array<i64: 128, 256, 64>, stages = 4 : i64,
  warps = array<i64: 2, 4>, path = #moe.path<hopper>, tma_stores}
