// Per-token negative log-likelihood on the GPU: nll[t] = logsumexp(logits[t]) - logits[t][target[t]].
// Test: build-cuda/tests/test_cuda_ops --gtest_filter='*CrossEntropy*' (on a GPU machine).
#pragma once

#include "backend/cuda/common.cuh"

namespace compactor {

// nll_dev: [T] f32 device; logits: [T, V] act; targets_dev: [T] i32 device, each in [0, V)
// (the caller checks them on the host)
Status cross_entropy_cuda(float* nll_dev, View logits, const int32_t* targets_dev, cudaStream_t stream);

}  // namespace compactor
