// Appends new keys and values to a layer's KV cache on the GPU.
// Test: build-cuda/tests/test_cuda_ops --gtest_filter='*KvStore*' (on a GPU machine).
#pragma once

#include "backend/cuda/common.cuh"

namespace compactor {

// k_cache/v_cache: [B, S_max, Hkv*Dh], rows past(b)+t receive k/v: [B*T, Hkv*Dh] rows b*T+t.
// All four views share one dtype (the cache stores what the projections produced).
Status kv_store_cuda(View k_cache, View v_cache, View k, View v, const DeviceBatch& batch, cudaStream_t stream);

}  // namespace compactor
