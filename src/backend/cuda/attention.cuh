// Causal multi-head attention over the KV cache on the GPU, flash-attention style (Dao et al.
// 2022: key tiles in shared memory, online softmax, no T×S matrix in device memory) with GQA,
// per-sequence past offsets, and flash-decoding (split over keys + a combine pass) when the
// grid would otherwise not fill the GPU (decode, T == 1).
// Test: build-cuda/tests/test_cuda_ops --gtest_filter='*Attention*' (on a GPU machine).
#pragma once

#include <cstddef>

#include "backend/backend.h"
#include "backend/cuda/common.cuh"

namespace compactor {

// How the keys are split across blocks; workspace_floats f32 of device scratch are needed when
// splits > 1 (partial outputs and their log-sum-exps).
struct AttentionPlan {
  int splits = 1;
  int keys_per_split = 0;
  size_t workspace_floats = 0;
  size_t counter_ints = 0;  // finished-split counters of the decode kernel (zeroed once; it leaves them zero)
};

// force_splits > 0 overrides the heuristic (tests use it to cover both paths on any shape).
AttentionPlan plan_attention(const AttentionParams& p, const DeviceBatch& batch, int sm_count, int force_splits);

// out: [B*T, H*Dh] act; q: [B*T, H*Dh] act; k_cache/v_cache: [B, S_max, Hkv*Dh] act with rows
// 0 .. past(b)+T-1 filled; workspace: plan.workspace_floats f32 device (nullptr when 0);
// counters: plan.counter_ints zeroed ints (nullptr when 0).
// Query t of sequence b sees keys 0 .. past(b)+t; head h reads kv head h / (H/Hkv).
// Head dims 64/128 with 16-byte aligned views run on tensor cores: with kAuto, T·G <= 8 query rows
// per kv head and split keys (decode of a small batch) on attention_decode.cuh's kernel, the rest
// on attention_tc.cuh's (16 query rows per warp; kTensorCores: always); other head dims, or
// everything with kCudaCores, on the CUDA-core kernel.
enum class AttentionVariant { kAuto, kTensorCores, kCudaCores };
Status attention_cuda(View out, View q, View k_cache, View v_cache, const AttentionParams& p,
                      const DeviceBatch& batch, const AttentionPlan& plan, float* workspace, int* counters,
                      cudaStream_t stream, AttentionVariant variant = AttentionVariant::kAuto);

}  // namespace compactor
