// Dense linear layer on the GPU through cuBLAS: out = x · wᵀ (+ bias), fp32 accumulation.
// Weights must already be in the activation dtype: the model converts f32 checkpoints (e.g.
// stories260K) at upload, so a mismatch here is reported as unsupported instead of converted.
// Test: build-cuda/tests/test_cuda_ops --gtest_filter='*Matmul*' (on a GPU machine).
#pragma once

#include "backend/backend.h"
#include "backend/cuda/common.cuh"

namespace compactor {

// out: [T, N] act; x: [T, K] act; w.weight: [N, K] dense, same dtype as x; w.bias: [N] f32|f16|bf16
// or absent. `handle` must be bound to `stream` (cublasSetStream) by the caller. allow_gemv: T <= 4
// rows (decode) may use the GEMV kernel instead of cuBLAS. accumulate: out += x · wᵀ (no bias),
// one rounding of the f32 sum.
Status matmul_cuda(View out, View x, const LinearWeight& w, cublasHandle_t handle, cudaStream_t stream,
                   bool allow_gemv = true, bool accumulate = false);

// outs[m] = x · ws[m]ᵀ (+ bias) for m < count (1..3): linears sharing their input. Decode-sized
// inputs run as one GEMV launch over all members; otherwise one matmul_cuda per member.
Status matmul_group_cuda(const View* outs, View x, const LinearWeight* const* ws, int count, cublasHandle_t handle,
                         cudaStream_t stream, bool allow_gemv = true);

// The GEMV kernel with its input formed on the fly (decode fusions): x itself or silu(x)·up (SwiGLU
// before the down projection). An rms_norm prologue was measured and removed: every block has to
// reduce all of x before its first FMA, and decode B=1 on llama2-7b dropped from 177.5 to 165.3
// tok/s on the H100 (bench/NOTES.md); the separate rms_norm launch is cheaper.
enum class GemvInput { kPlain, kSwiglu };
struct GemvPrologue {
  GemvInput input = GemvInput::kPlain;
  View up;  // kSwiglu: [T, K] act (x is the gate)
};

// True when outs = input(x) · wsᵀ can run as one GEMV launch (T <= 4, K % 8 == 0, aligned, dense).
bool gemv_group_supported(View x, const LinearWeight* const* ws, int count);
// outs[m] (+)= input(x) · ws[m]ᵀ for m < count (1..3); accumulate adds into outs (no bias).
Status gemv_group_cuda(const View* outs, View x, const LinearWeight* const* ws, int count, const GemvPrologue& pro,
                       bool accumulate, cudaStream_t stream);

}  // namespace compactor
