// Shape and dtype invariants of the Backend ops (backend/backend.h), shared by the reference ops,
// the fast CPU ops and any other backend: a violation is a caller bug, so each check is a
// COMPACTOR_ASSERT whose message names the op and the shapes involved.
// Test: build/tests/test_cpu_ops.
#pragma once

#include <cstdint>

#include "backend/backend.h"

namespace compactor {

bool is_float_dtype(DType d);

// Returns D. out/x: [T, D]; weight: [D]
int64_t check_rms_norm(const char* op, View out, View x, View weight);
// x/delta: [T, D]
void check_same_shape(const char* op, View a, View b);
// out: [T, D]; table: [V, D]
void check_embedding(View out, View table);
// out: [T, N]; x: [T, K]; w.weight: [N, K] of w.format's dtype; w.bias: [N] when present
void check_matmul(View out, View x, const LinearWeight& w);
// x: [B*T, n_heads*head_dim]
void check_rope(View x, int n_heads, int head_dim, const BatchLayout& layout);
// caches: [B, S_max, Hkv*Dh] with room for past(b)+T; k/v: [B*T, Hkv*Dh]
void check_kv_store(View k_cache, View v_cache, View k, View v, const BatchLayout& layout);
// out/q: [B*T, H*Dh]; caches: [B, S_max, Hkv*Dh] with past(b)+T <= S_max; H % Hkv == 0
void check_attention(View out, View q, View k_cache, View v_cache, const AttentionParams& p,
                     const BatchLayout& layout);
// out/gate/up: [T, F]
void check_swiglu(View out, View gate, View up);
// logits: [T, V]; every target in [0, V)
void check_cross_entropy(View logits, const int32_t* targets);

}  // namespace compactor
