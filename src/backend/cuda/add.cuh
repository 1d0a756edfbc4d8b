// Elementwise residual add on the GPU: x += delta (f32 math, one rounding).
// Test: build-cuda/tests/test_cuda_ops --gtest_filter='*Add*' (on a GPU machine).
#pragma once

#include "backend/cuda/common.cuh"

namespace compactor {

// x: [T, D] act, updated in place; delta: [T, D] act
Status add_cuda(View x, View delta, cudaStream_t stream);

}  // namespace compactor
