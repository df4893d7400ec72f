// Each case: one verifier error of moe.grouped_gemm.
// RUN: %moejit-opt %s -split-input-file -verify-diagnostics

// expected-error @below {{element_type must be bf16 or f16}}
moe.grouped_gemm @case0 {varlen = #moe.varlen<m>, element_type = f32, experts = 8 : i64, m = 0 : i64, n = 256 : i64, k = 512 : i64, a_k_contiguous = true, b_k_contiguous = false, epilogue = #moe.epilogue<store>, activation = #moe.activation<swiglu>, gate_up = #moe.gate_up<concatenated>, c_columns = 256 : i64, aux_columns = 0 : i64, tile = array<i64: 128, 128, 64>, stages = 3 : i64, warps = array<i64: 2, 2>, path = #moe.path<portable>}

// -----

// expected-error @below {{varlen-M needs m = 0}}
moe.grouped_gemm @case1 {varlen = #moe.varlen<m>, element_type = bf16, experts = 8 : i64, m = 64 : i64, n = 256 : i64, k = 512 : i64, a_k_contiguous = true, b_k_contiguous = false, epilogue = #moe.epilogue<store>, activation = #moe.activation<swiglu>, gate_up = #moe.gate_up<concatenated>, c_columns = 256 : i64, aux_columns = 0 : i64, tile = array<i64: 128, 128, 64>, stages = 3 : i64, warps = array<i64: 2, 2>, path = #moe.path<portable>}

// -----

// expected-error @below {{m, n and k must be multiples of 8}}
moe.grouped_gemm @case2 {varlen = #moe.varlen<m>, element_type = bf16, experts = 8 : i64, m = 0 : i64, n = 256 : i64, k = 500 : i64, a_k_contiguous = true, b_k_contiguous = false, epilogue = #moe.epilogue<store>, activation = #moe.activation<swiglu>, gate_up = #moe.gate_up<concatenated>, c_columns = 256 : i64, aux_columns = 0 : i64, tile = array<i64: 128, 128, 64>, stages = 3 : i64, warps = array<i64: 2, 2>, path = #moe.path<portable>}

// -----

// expected-error @below {{tile k must be a multiple of 16}}
moe.grouped_gemm @case3 {varlen = #moe.varlen<m>, element_type = bf16, experts = 8 : i64, m = 0 : i64, n = 256 : i64, k = 512 : i64, a_k_contiguous = true, b_k_contiguous = false, epilogue = #moe.epilogue<store>, activation = #moe.activation<swiglu>, gate_up = #moe.gate_up<concatenated>, c_columns = 256 : i64, aux_columns = 0 : i64, tile = array<i64: 128, 128, 40>, stages = 3 : i64, warps = array<i64: 2, 2>, path = #moe.path<portable>}

// -----

// expected-error @below {{does not divide into the 2x2 warp layout}}
moe.grouped_gemm @case4 {varlen = #moe.varlen<m>, element_type = bf16, experts = 8 : i64, m = 0 : i64, n = 256 : i64, k = 512 : i64, a_k_contiguous = true, b_k_contiguous = false, epilogue = #moe.epilogue<store>, activation = #moe.activation<swiglu>, gate_up = #moe.gate_up<concatenated>, c_columns = 256 : i64, aux_columns = 0 : i64, tile = array<i64: 128, 48, 64>, stages = 3 : i64, warps = array<i64: 2, 2>, path = #moe.path<portable>}

// -----

// expected-error @below {{needs 256 accumulator registers per thread}}
moe.grouped_gemm @case5 {varlen = #moe.varlen<m>, element_type = bf16, experts = 8 : i64, m = 0 : i64, n = 256 : i64, k = 512 : i64, a_k_contiguous = true, b_k_contiguous = false, epilogue = #moe.epilogue<store>, activation = #moe.activation<swiglu>, gate_up = #moe.gate_up<concatenated>, c_columns = 256 : i64, aux_columns = 0 : i64, tile = array<i64: 256, 128, 64>, stages = 3 : i64, warps = array<i64: 2, 2>, path = #moe.path<portable>}

// -----

// expected-error @below {{stages must be in [2, 8]}}
moe.grouped_gemm @case6 {varlen = #moe.varlen<m>, element_type = bf16, experts = 8 : i64, m = 0 : i64, n = 256 : i64, k = 512 : i64, a_k_contiguous = true, b_k_contiguous = false, epilogue = #moe.epilogue<store>, activation = #moe.activation<swiglu>, gate_up = #moe.gate_up<concatenated>, c_columns = 256 : i64, aux_columns = 0 : i64, tile = array<i64: 128, 128, 64>, stages = 1 : i64, warps = array<i64: 2, 2>, path = #moe.path<portable>}

// -----

// expected-error @below {{gather_b needs varlen-K}}
moe.grouped_gemm @case7 {varlen = #moe.varlen<m>, element_type = bf16, experts = 8 : i64, m = 0 : i64, n = 256 : i64, k = 512 : i64, a_k_contiguous = true, b_k_contiguous = false, epilogue = #moe.epilogue<store>, activation = #moe.activation<swiglu>, gate_up = #moe.gate_up<concatenated>, c_columns = 256 : i64, aux_columns = 0 : i64, tile = array<i64: 128, 128, 64>, stages = 3 : i64, warps = array<i64: 2, 2>, path = #moe.path<portable>, gather_b}

// -----

// expected-error @below {{scale_b_rows needs varlen-K}}
moe.grouped_gemm @case8 {varlen = #moe.varlen<m>, element_type = bf16, experts = 8 : i64, m = 0 : i64, n = 256 : i64, k = 512 : i64, a_k_contiguous = true, b_k_contiguous = false, epilogue = #moe.epilogue<store>, activation = #moe.activation<swiglu>, gate_up = #moe.gate_up<concatenated>, c_columns = 256 : i64, aux_columns = 0 : i64, tile = array<i64: 128, 128, 64>, stages = 3 : i64, warps = array<i64: 2, 2>, path = #moe.path<portable>, scale_b_rows}

// -----

// expected-error @below {{varlen-K reads A and B as grouped rows}}
moe.grouped_gemm @case9 {varlen = #moe.varlen<k>, element_type = bf16, experts = 8 : i64, m = 128 : i64, n = 256 : i64, k = 0 : i64, a_k_contiguous = false, b_k_contiguous = true, epilogue = #moe.epilogue<store>, activation = #moe.activation<swiglu>, gate_up = #moe.gate_up<concatenated>, c_columns = 256 : i64, aux_columns = 0 : i64, tile = array<i64: 128, 128, 64>, stages = 3 : i64, warps = array<i64: 2, 2>, path = #moe.path<portable>}

// -----

// expected-error @below {{epilogue scale_rows is incompatible with varlen-K}}
moe.grouped_gemm @case10 {varlen = #moe.varlen<k>, element_type = bf16, experts = 8 : i64, m = 128 : i64, n = 256 : i64, k = 0 : i64, a_k_contiguous = false, b_k_contiguous = false, epilogue = #moe.epilogue<scale_rows>, activation = #moe.activation<swiglu>, gate_up = #moe.gate_up<concatenated>, c_columns = 256 : i64, aux_columns = 0 : i64, tile = array<i64: 128, 128, 64>, stages = 3 : i64, warps = array<i64: 2, 2>, path = #moe.path<portable>}

// -----

// expected-error @below {{act_forward needs an activation other than none}}
moe.grouped_gemm @case11 {varlen = #moe.varlen<m>, element_type = bf16, experts = 8 : i64, m = 0 : i64, n = 256 : i64, k = 512 : i64, a_k_contiguous = true, b_k_contiguous = false, epilogue = #moe.epilogue<act_forward>, activation = #moe.activation<none>, gate_up = #moe.gate_up<concatenated>, c_columns = 256 : i64, aux_columns = 0 : i64, tile = array<i64: 128, 128, 64>, stages = 3 : i64, warps = array<i64: 2, 2>, path = #moe.path<portable>}

// -----

// expected-error @below {{a gated act_forward needs n a multiple of 16 and aux_columns = n / 2 (128)}}
moe.grouped_gemm @case12 {varlen = #moe.varlen<m>, element_type = bf16, experts = 8 : i64, m = 0 : i64, n = 256 : i64, k = 512 : i64, a_k_contiguous = true, b_k_contiguous = false, epilogue = #moe.epilogue<act_forward>, activation = #moe.activation<swiglu>, gate_up = #moe.gate_up<concatenated>, c_columns = 256 : i64, aux_columns = 256 : i64, tile = array<i64: 128, 128, 64>, stages = 3 : i64, warps = array<i64: 2, 2>, path = #moe.path<portable>}

// -----

// expected-error @below {{d_activation of swiglu writes dH and reads H with 512 columns}}
moe.grouped_gemm @case13 {varlen = #moe.varlen<m>, element_type = bf16, experts = 8 : i64, m = 0 : i64, n = 256 : i64, k = 512 : i64, a_k_contiguous = true, b_k_contiguous = false, epilogue = #moe.epilogue<d_activation>, activation = #moe.activation<swiglu>, gate_up = #moe.gate_up<concatenated>, c_columns = 256 : i64, aux_columns = 0 : i64, tile = array<i64: 128, 128, 64>, stages = 3 : i64, warps = array<i64: 2, 2>, path = #moe.path<portable>}
