// Fused residual add + RMSNorm on the GPU: residual += delta (rounded to the activation dtype),
// then out = rms_norm(residual) * weight with f32 math.
// Test: build-cuda/tests/test_cuda_ops --gtest_filter='*AddRmsNorm*' (on a GPU machine).
#pragma once

#include "backend/cuda/common.cuh"

namespace compactor {

// out: [T, D] act (may alias delta); residual: [T, D] act, updated in place; delta: [T, D] act;
// weight: [D] f32|f16|bf16
Status add_rms_norm_cuda(View out, View residual, View delta, View weight, float eps, cudaStream_t stream);

}  // namespace compactor
