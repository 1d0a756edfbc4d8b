// Tensor-core causal GQA attention (FlashAttention-2, Dao 2023): a block of 4 warps owns 64 query
// rows (16 per warp, Q fragments in registers), K/V tiles of 64 keys stream through shared memory
// with cp.async double buffering, S = QKᵀ and O += PV run on mma.sync m16n8k16 (bf16/f16 in, f32
// accumulate), the online softmax stays in f32 registers, and no T×S matrix exists anywhere.
// Rows are (token, query head of the kv head) pairs as in attention.cu, so GQA heads share each
// K/V tile; the key range can be split (flash-decoding partials merged by attention.cu's
// combine kernel). Head dims 64 and 128; attention.cu keeps the CUDA-core kernel for the rest.
// Test: build-cuda/tests/test_cuda_ops --gtest_filter='*Attention*' (on a GPU machine).
#pragma once

#include <cstdint>

#include "backend/cuda/common.cuh"

namespace compactor {

constexpr int kTcRows = 64;  // query rows per block
constexpr int kTcKeys = 64;  // keys per K/V tile

struct AttentionTcArgs {
  const void* q;        // [B*T, H*Dh] act
  const void* k_cache;  // [B, S_max, Hkv*Dh] act
  const void* v_cache;  // [B, S_max, Hkv*Dh] act
  void* out;            // [B*T, H*Dh] act (splits == 1)
  float* part_o;        // [splits, B*T*H, Dh] f32 (splits > 1)
  float* part_lse;      // [splits, B*T*H] log2-sum-exp (splits > 1)
  const int32_t* past;  // [B] device
  int batch, tokens, heads, kv_heads, group, head_dim;
  int64_t s_max;
  int splits, keys_per_split;
  float scale_log2;     // softmax scale · log2(e)
};

// True when the tensor-core kernel handles this shape and these pointers (Dh 64 or 128, 16-byte
// aligned q/out/caches).
bool attention_tc_supported(int head_dim, const void* q, const void* out, const void* k_cache, const void* v_cache);

// Launches over grid (row tiles × splits, Hkv, B); dtype is the activation dtype (bf16 or f16).
Status attention_tc_cuda(const AttentionTcArgs& a, DType dtype, cudaStream_t stream);

}  // namespace compactor
