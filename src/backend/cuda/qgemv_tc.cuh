// Launcher of the tensor-core int4 kernel (qgemv_tc.cu), called by qgemv_cuda after its argument
// checks and x staging; .cu files only (it names the CUDA element types).
// Test: build-*/tests/test_cuda_qgemm (on a GPU machine).
#pragma once

#include "backend/cuda/qgemv.cuh"

namespace compactor {

// out: [m, N] act (+)= x: [m, Kp] act (T) · dq(w)ᵀ (+ bias); w.tc holds the tc layout.
template <typename T>
Status qgemv_tc_launch(View out, const void* x, int64_t m, const QgemvWeight& w, View bias, bool accumulate,
                       cudaStream_t stream);

}  // namespace compactor
