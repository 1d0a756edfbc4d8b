// Scalar reference of every Backend op: the spec that the fast CPU ops and the CUDA ops are tested
// against (llm.c's `*_ref` kernels, ggml's `quantize_row_*_ref`). Plain loops, f32 math with double
// accumulation for sums; any float dtype (f32/f16/bf16) is accepted for every activation, weight
// and cache view, so device results can be compared after a copy to the host.
// Layouts are those of backend/backend.h (row-major, contiguous). Conventions pinned here:
//   rope: rotate-half (HF Llama): pair (x[i], x[i+Dh/2]), i < Dh/2, rotated by the f32 angle
//         float(pos) * inv_freq[i], pos = past(b) + t.
//   attention: causal; head h reads kv head h / (H/Hkv); query t of sequence b sees cache rows
//         0 .. past(b)+t; softmax(scale · q·k) · v.
//   cross_entropy: nll = logsumexp(logits) - logits[target], in double.
// Test: build/tests/test_cpu_ops (pins the references with hand-computed cases too).
#pragma once

#include <cstdint>

#include "backend/backend.h"

namespace compactor {

// out: [T, D]; ids: [T] i32 host; table: [V, D]
void embedding_ref(View out, const int32_t* ids, View table);
// out: [T, D] = x / sqrt(mean(x²) + eps) * weight; x: [T, D]; weight: [D]
void rms_norm_ref(View out, View x, View weight, float eps);
// residual += delta; out = rms_norm(residual). out/residual/delta: [T, D]; weight: [D]
void add_rms_norm_ref(View out, View residual, View delta, View weight, float eps);
// x += delta; x/delta: [T, D]
void add_ref(View x, View delta);
// out: [T, N] = x: [T, K] · wᵀ + bias; w.weight: [N, K] dense (f32/f16/bf16); w.bias: [N] or absent
void matmul_ref(View out, View x, const LinearWeight& w);
// In place on x: [B*T, n_heads*head_dim]; inv_freq: [head_dim/2] f32 host
void rope_ref(View x, int n_heads, int head_dim, const float* inv_freq, const BatchLayout& layout);
// k_cache/v_cache: [B, S_max, Hkv*Dh] rows past(b)+t = k/v: [B*T, Hkv*Dh] rows b*T+t
void kv_store_ref(View k_cache, View v_cache, View k, View v, const BatchLayout& layout);
// out/q: [B*T, H*Dh]; k_cache/v_cache: [B, S_max, Hkv*Dh]
void attention_ref(View out, View q, View k_cache, View v_cache, const AttentionParams& p,
                   const BatchLayout& layout);
// out = silu(gate) * up; all [T, F]
void swiglu_ref(View out, View gate, View up);
// nll: [T] f32 host; logits: [T, V]; targets: [T] i32 host in [0, V)
void cross_entropy_ref(float* nll, View logits, const int32_t* targets);

}  // namespace compactor
