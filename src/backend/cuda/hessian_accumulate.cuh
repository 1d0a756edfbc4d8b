// Calibration statistics and Hessian preparation on the GPU (the host versions are
// compress/hessian.cpp and compress/obs_solver.cpp):
//   gram_accumulate:      G += XᵀX (cuBLAS GemmEx: X in its activation dtype, f32 products and sums,
//                         so bf16 activations lose nothing), abs_sum[k] += Σ_t |x[t, k]| (f64)
//   hessian_permute_damp: H = scale · G; Hp[i, j] = H[perm[i], perm[j]], diagonal (H_cc == 0 ? 1 : H_cc) + damp
//                         (GPTQ's 2/n scaling, dead-input fix, act-order permutation and damping in one pass)
//   symmetrize_lower:     row-major lower triangle := upper (cuSOLVER potri fills one triangle)
// Test: build-cuda/tests/test_cuda_gptq (on a GPU machine).
#pragma once

#include "backend/cuda/common.cuh"

namespace compactor {

// x: [rows, K] f32|f16|bf16 device; gram: [K, K] f32 device (accumulated, both triangles);
// abs_sum: [K] f64 device (accumulated) or nullptr. `cublas` must be bound to `stream`.
Status gram_accumulate_cuda(cublasHandle_t cublas, View x, float* gram, double* abs_sum, cudaStream_t stream);

// hp: [K, K] f32 out; g: [K, K] f32; perm: [K] i32 (all device).
Status hessian_permute_damp_cuda(float* hp, const float* g, float scale, const int32_t* perm, int64_t k, float damp,
                                 cudaStream_t stream);

// a: [K, K] f32 device: a[i, j] = a[j, i] for j < i.
Status symmetrize_lower_cuda(float* a, int64_t k, cudaStream_t stream);

}  // namespace compactor
