// The GPTQ column sweep on the GPU (Frantar et al. 2022; the host version is compress/obs_solver.cpp
// with compress/gptq.cpp's policy): weights are swept transposed and permuted, wt: [K, N] f32 with
// row p = input column perm[p] (a column of W is a contiguous row, coalesced across output rows).
//
//   gptq_gather:  wt[p, n] = W[n, perm[p]] (0 for dead inputs)
//   gptq_block:   columns p in [i1, i2), one thread per output row n, in order:
//                   group start (dynamic groups): scale/zero from the current wt rows of the group
//                   q = dequant(quant(wt[p, n])), codes_t[p, n] = code, wt[p, n] = q
//                   e = (w - q) / U[p, p];  err[p - i1, n] = e;  wt[j, n] -= U[p, j] · e  (p < j < i2)
//                 (the caller then applies the lazy update wt[i2:, :] -= U[i1:i2, i2:]ᵀ · err, one GEMM)
//   gptq_scatter: W_hat[n, perm[p]] = wt[p, n], codes[n, perm[p]] = codes_t[p, n]
// U: [K, K] f32 row-major, upper triangle = the Cholesky factor of H⁻¹ (H⁻¹ = UᵀU), as on the host.
// Test: build-cuda/tests/test_cuda_gptq (on a GPU machine).
#pragma once

#include "backend/cuda/common.cuh"
#include "formats/quant.h"

namespace compactor {

// wt: [K, N] f32 out; w: [N, K] f32; perm: [K] i32; dead: [K] u8 or nullptr (all device).
Status gptq_gather_cuda(float* wt, const float* w, const int32_t* perm, const uint8_t* dead, int64_t n, int64_t k,
                        cudaStream_t stream);

struct GptqBlockArgs {
  float* wt = nullptr;            // [K, N] f32, in/out
  uint8_t* codes_t = nullptr;     // [K, N] u8, out (rows i1..i2)
  float* err = nullptr;           // [i2 - i1, N] f32, out
  const float* u = nullptr;       // [K, K] f32, upper triangle used
  float* scales = nullptr;        // [N, G] f32: dynamic groups: out (group g = p / group_size in sweep
  float* zeros = nullptr;         // order); static groups: in (natural group col / group_size)
  const int32_t* perm = nullptr;  // [K] i32
  int64_t n = 0, k = 0;
  int64_t i1 = 0, i2 = 0;         // the block of sweep positions
  QuantSpec spec;
  bool static_groups = false;     // requires spec.group_size > 0
};
Status gptq_block_cuda(const GptqBlockArgs& a, cudaStream_t stream);

// w_hat: [N, K] f32 out; codes: [N, K] u8 out; wt: [K, N] f32; codes_t: [K, N] u8; perm: [K] i32.
Status gptq_scatter_cuda(float* w_hat, uint8_t* codes, const float* wt, const uint8_t* codes_t, const int32_t* perm,
                         int64_t n, int64_t k, cudaStream_t stream);

}  // namespace compactor
