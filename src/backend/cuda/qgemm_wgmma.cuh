// Mixed-input GEMM on Hopper tensor cores (qgemm_wgmma.cu): int4 tc-layout weights times
// prefill-sized batches, the path the tensor-core launches take above the GEMV kernels' rows.
// .cu files only (the launch arguments name CUDA types).
// Test: build-*/tests/test_cuda_qgemm (on a GPU machine). Bench: build-*/bench/bench_qgemm.
#pragma once

#include "backend/cuda/qgemv_tc_chunk.cuh"

namespace compactor {

// Launches the GEMM when it supports these arguments (enabled, int4 (not NF4, not int8), x read
// directly: no act-order gather); false: the caller takes another kernel.
template <typename T>
Result<bool> qgemm_wgmma_launch(const qtc::QgemvTcArgs& a, cudaStream_t stream);

}  // namespace compactor
