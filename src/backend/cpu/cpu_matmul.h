// Fast CPU matmul with dense f32/f16/bf16 weights: y = x · wᵀ + bias.
// GEMV path: a SIMD tile kernel (4 weight rows × 4 activation rows with AVX-512) that reads f16/bf16
// weights directly, OpenMP over output rows; used for decode and, depending on the BLAS, prefill.
// sgemm path: blocks of 128 weight rows converted to f32 in per-thread buffers and multiplied with
// OpenBLAS sgemm, single-threaded inside the OpenMP region so the two thread pools never
// oversubscribe the cores. matmul_gemm_min_rows() picks the path. The spec is matmul_ref (ops_ref.h).
// Test: build/tests/test_cpu_ops; speed: build/bench/bench_cpu_ops.
#pragma once

#include "backend/backend.h"

namespace compactor {

// Rows of x from which matmul_cpu takes the sgemm path (below: GEMV). Measured on a Zen 5 with
// bench_cpu_ops: sgemm wins from T ≈ 64 when OpenBLAS's kernels are as wide as the GEMV's, and
// never when OpenBLAS runs AVX2 kernels on an AVX-512 build (OpenBLAS 0.3.21 picks its Haswell
// kernels on AMD Zen 4/5 unless OPENBLAS_CORETYPE=SkylakeX is set), so the answer depends on both.
int64_t matmul_gemm_min_rows();

// out: [T, N] f32 = x: [T, K] f32 · wᵀ (+ bias); w.weight: [N, K] f32/f16/bf16
void matmul_cpu(View out, View x, const LinearWeight& w);

// The two paths, exposed for tests and benchmarks (matmul_cpu picks by T).
void matmul_gemv_cpu(View out, View x, const LinearWeight& w);
void matmul_gemm_cpu(View out, View x, const LinearWeight& w);

}  // namespace compactor
