// Launcher of the tensor-core int4 kernel (qgemv_tc.cu), called by qgemv_cuda after its argument
// checks and x staging; .cu files only (it names the CUDA element types).
// Test: build-*/tests/test_cuda_qgemm (on a GPU machine).
#pragma once

#include "backend/cuda/qgemv.cuh"

namespace compactor {

// Input rows up to which the tensor-core kernel reads act-order x through the permutation itself.
inline constexpr int64_t kQgemvTcGatherMaxRows = 8;

// outs[i]: [m, N_i] act (+)= x · dq(ws[i])ᵀ (+ biases[i]) for i < n <= kQgemvMaxGroup, in one launch;
// every ws[i] holds the tc layout with the same K and group size. x: [m, ldx] act (T), the staged
// [m, Kp] x, or with `gather` (act-order, n = 1, m <= kQgemvTcGatherMaxRows) x itself (ldx = K).
template <typename T>
Status qgemv_tc_launch(const View* outs, const QgemvWeight* const* ws, const View* biases, int n, const void* x,
                       int64_t ldx, int64_t m, bool gather, bool accumulate, cudaStream_t stream);

}  // namespace compactor
