// Rotary position embedding on the GPU, rotate-half form (HF Llama, Su et al. 2021), in place.
// Test: build-cuda/tests/test_cuda_ops --gtest_filter='*Rope*' (on a GPU machine).
#pragma once

#include "backend/cuda/common.cuh"

namespace compactor {

// x: [B*T, n_heads*head_dim] act, rotated in place at positions past(b) + t;
// inv_freq_dev: [head_dim/2] f32 device (already including any rope scaling)
Status rope_cuda(View x, int n_heads, int head_dim, const float* inv_freq_dev, const DeviceBatch& batch,
                 cudaStream_t stream);

}  // namespace compactor
