// Token embedding lookup on the GPU: out[t] = table[ids[t]] converted to the activation dtype.
// Test: build-cuda/tests/test_cuda_ops --gtest_filter='*Embedding*' (on a GPU machine).
#pragma once

#include "backend/cuda/common.cuh"

namespace compactor {

// out: [T, D] bf16|f16; ids_dev: [T] i32 device, each in [0, V) (the caller checks them on the
// host); table: [V, D] f32|f16|bf16
Status embedding_cuda(View out, const int32_t* ids_dev, View table, cudaStream_t stream);

}  // namespace compactor
