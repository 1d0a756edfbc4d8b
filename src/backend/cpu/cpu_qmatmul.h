// CPU matmul with packed quantized weights (int8/4/3/2, formats/quant_pack.h): y = x · dq(w)ᵀ + bias.
// The reference dequantizes the whole weight with dequantize_ref and multiplies with matmul_ref's
// arithmetic. Two fast paths:
//   fused GEMV (2/4/8 bits, no act-order, where the dense matmul takes its GEMV): SIMD lanes are
//     16 (AVX-512) or 8 (AVX2) consecutive output rows, whose packed words are contiguous in
//     qweight; codes are unpacked in registers and never stored (about as fast as the bf16 GEMV
//     with 4x fewer weight bytes at 4 bits);
//   blocked (everything else): each OpenMP thread dequantizes a block of output rows to f32 in a
//     thread-local buffer and multiplies it with SIMD dots (few rows) or single-threaded sgemm.
// NF4 (formats/nf4.h, cpu_nf4.h): its own fused GEMV (levels looked up in registers) for few rows,
// the blocked path with its own row dequantization otherwise; the reference is dequantize_nf4_ref.
// CpuBackend::matmul calls matmul_quantized_cpu for quantized formats.
// Test: build-*/tests/test_cpu_qmatmul.
#pragma once

#include "backend/backend.h"
#include "backend/cpu/cpu_nf4.h"
#include "formats/quant_pack.h"

namespace compactor {

// The packed tensors of an intN host LinearWeight as a PackedRef (views must be on the CPU).
PackedRef packed_ref(const LinearWeight& w);

// A LinearWeight over the host tensors of `p` (kept alive by the caller), with an optional bias.
LinearWeight linear_weight_of(const PackedLinear& p, View bias = View{});

// Checks a quantized LinearWeight's packed views (dtypes, shapes against N, K, bits, group size;
// NF4: check_nf4_weight).
void check_quantized_weight(const char* op, const LinearWeight& w);

// out: [N, K] f32 = the dequantized weight (the spec every quantized kernel is tested against).
void dequantize_linear_ref(const LinearWeight& w, float* out);

// out: [T, N] f32 = x: [T, K] f32 · dq(w)ᵀ (+ bias), scalar double accumulation (the spec).
void matmul_quantized_ref(View out, View x, const LinearWeight& w);

// out: [T, N] f32 = x: [T, K] f32 · dq(w)ᵀ (+ bias): picks the fused GEMV where it applies.
void matmul_quantized_cpu(View out, View x, const LinearWeight& w);
// The blocked path for every row (exposed for tests and benchmarks).
void matmul_quantized_blocked_cpu(View out, View x, const LinearWeight& w);

}  // namespace compactor
