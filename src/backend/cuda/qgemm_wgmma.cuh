// Mixed-input GEMM on Hopper tensor cores (qgemm_wgmma.cu): int4 tc-layout weights times
// prefill-sized batches, the path the tensor-core launches take above the GEMV kernels' rows.
// .cu files only (the launch arguments name CUDA types).
// Test: build-*/tests/test_cuda_qgemm (on a GPU machine). Bench: build-*/bench/bench_qgemm.
#pragma once

#include "backend/cuda/qgemv_tc_chunk.cuh"

namespace compactor {

// Launches the GEMM when it takes these arguments (qgemm_wgmma_takes, no act-order gather); false:
// the caller takes another kernel. x that breaks qgemv_cuda's hand-over (16-byte aligned rows of
// Kp) is an error, not a silent fallback to a kernel built for 32 rows.
template <typename T>
Result<bool> qgemm_wgmma_launch(const qtc::QgemvTcArgs& a, cudaStream_t stream);

}  // namespace compactor
