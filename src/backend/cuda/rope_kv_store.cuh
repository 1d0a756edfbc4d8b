// RoPE on q and k plus the KV-cache append, fused into one launch for the decode step (three
// launches of tiny kernels otherwise, ~2 µs each per layer): each thread rotates 8 pairs of one
// q or k head (k is written both in place and into the cache), or copies 8 elements of v into
// the cache. Same math as rope.cu and kv_store.cu.
// Test: build-cuda/tests/test_cuda_ops --gtest_filter='*RopeKvStore*' (on a GPU machine).
#pragma once

#include "backend/cuda/common.cuh"

namespace compactor {

// True when the fused kernel handles these views: head_dim / 2 % 8 == 0, same act dtype, 16-byte
// aligned pointers.
bool rope_kv_store_supported(View q, View k, View v, View k_cache, View v_cache, int head_dim);

// q: [B*T, H*Dh] act and k: [B*T, Hkv*Dh] act, rotated in place at positions past(b) + t;
// v: [B*T, Hkv*Dh] act; k_cache/v_cache: [B, S_max, Hkv*Dh] act get k (rotated) and v at those
// positions. inv_freq_dev: [Dh/2] f32 device.
Status rope_kv_store_cuda(View q, View k, View v, View k_cache, View v_cache, int heads, int kv_heads, int head_dim,
                          const float* inv_freq_dev, const DeviceBatch& batch, cudaStream_t stream);

}  // namespace compactor
