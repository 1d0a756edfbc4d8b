// CPU side of NF4 linears (formats/nf4.h): the host views of an NF4 LinearWeight, its
// consistency check, the per-row-block dequantization the blocked quantized matmul
// (cpu_qmatmul.cpp) multiplies with, and a fused GEMV for few rows (decode). matmul_quantized_cpu / dequantize_linear_ref dispatch here
// for Format::kNF4.
// Test: build-*/tests/test_cpu_nf4.
#pragma once

#include "backend/backend.h"
#include "formats/nf4.h"

namespace compactor {

// The stored tensors of an NF4 host LinearWeight as an NF4Ref (views must be on the CPU).
NF4Ref nf4_ref(const LinearWeight& w);

// A LinearWeight over the host tensors of `p` (kept alive by the caller), with an optional bias.
LinearWeight linear_weight_of(const PackedNF4& p, View bias = View{});

// Aborts naming `op` and the tensor when the NF4 views are inconsistent or not on the host.
void check_nf4_weight(const char* op, const LinearWeight& w);

// Output rows n0 .. n0+nb dequantized: out: [nb, K] f32 (the same values as dequantize_nf4_ref).
void dequantize_nf4_rows(const NF4Ref& r, int64_t n0, int64_t nb, float* out);

// The fused GEMV (SIMD lanes = output rows, codes decoded in registers): applies when K and the
// block size are multiples of 8 and N holds at least one lane group (AVX-512: 16 rows, AVX2: 8).
bool nf4_fused_eligible(const NF4Ref& r);
// y[m, 0 .. R) = x[m] · dq(w)ᵀ for the whole lane groups of rows; returns R, the first row left for
// the blocked path. x: [rows, K] f32; y: [rows, N] f32
int64_t nf4_fused_gemv(const NF4Ref& r, const float* x, int64_t rows, float* y);

}  // namespace compactor
