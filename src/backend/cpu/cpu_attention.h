// Fast CPU causal attention over the KV cache (GQA): OpenMP over (sequence, head, block of query
// rows); each block streams the visible keys in tiles with an online (running-max) softmax, so the
// only memory besides the output is per-thread scratch of a few tiles. The spec is attention_ref.
// Test: build/tests/test_cpu_ops.
#pragma once

#include "backend/backend.h"

namespace compactor {

// out/q: [B*T, H*Dh] f32; k_cache/v_cache: [B, S_max, Hkv*Dh] f32/f16/bf16
void attention_cpu(View out, View q, View k_cache, View v_cache, const AttentionParams& p,
                   const BatchLayout& layout);

}  // namespace compactor
