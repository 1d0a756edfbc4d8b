// Decode attention on tensor cores: few query rows per kv head (T·G <= 8, e.g. one token of MHA
// or GQA up to 8 heads per kv head). The FlashAttention-2 kernel (attention_tc.cuh) gives each
// warp 16 query rows, so at decode 15 of every 16 rows (and 3 of 4 warps) are padding; here the
// keys take the mma's M side instead (Sᵀ = K·qᵀ: 16 keys × 8 rows per mma, Oᵀ = Vᵀ·Pᵀ: 16 dims ×
// 8 rows), so all 4 warps of a block work on one 64-key tile. A block owns (split, kv head,
// sequence): it prefetches the cached keys (those below `past`, which only earlier launches wrote)
// before waiting for the previous kernel, and the last block of a (sequence, kv head) to finish
// merges the splits' partials itself (flash-decoding, no combine launch). Only for split keys.
// Test: build-cuda/tests/test_cuda_ops --gtest_filter='*Attention*' (on a GPU machine).
#pragma once

#include <cstdint>

#include "backend/cuda/common.cuh"

namespace compactor {

constexpr int kDecodeRows = 8;   // query rows (T·G) per kv head, the mma's N
constexpr int kDecodeKeys = 64;  // keys per tile (16 per warp)
constexpr int kDecodeMaxSplits = 64;

struct AttentionDecodeArgs {
  const void* q;        // [B*T, H*Dh] act
  const void* k_cache;  // [B, S_max, Hkv*Dh] act
  const void* v_cache;  // [B, S_max, Hkv*Dh] act
  void* out;            // [B*T, H*Dh] act
  float* part_o;        // [splits, B*T*H, Dh] f32
  float* part_lse;      // [splits, B*T*H] log2-sum-exp
  int* done;            // [B*Hkv] finished-split counters, zero between calls
  const int32_t* past;  // [B] device
  int batch, tokens, heads, kv_heads, group, head_dim;
  int64_t s_max;
  int splits, keys_per_split;  // keys_per_split: a multiple of kDecodeKeys
  float scale_log2;            // softmax scale · log2(e)
};

// True for T·G <= kDecodeRows, Dh 64 or 128, 2 .. kDecodeMaxSplits splits of whole tiles (the
// kernel always merges; unsplit shapes go to attention_tc.cuh) and 16-byte aligned q/out/caches.
bool attention_decode_supported(int rows_per_kv_head, int head_dim, int splits, int keys_per_split, const void* q,
                                const void* out, const void* k_cache, const void* v_cache);

// Grid (splits, Hkv, B); dtype is the activation dtype (bf16 or f16).
Status attention_decode_cuda(const AttentionDecodeArgs& a, DType dtype, cudaStream_t stream);

}  // namespace compactor
