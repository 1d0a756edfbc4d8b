// Fast CPU causal attention with an online softmax over key tiles; see cpu_attention.h.
// Test: build/tests/test_cpu_ops.
#include "backend/cpu/cpu_attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_simd.h"
#include "backend/cpu/op_checks.h"

namespace compactor {

namespace {

constexpr int kQueryBlock = 16;  // query rows sharing one pass over the keys
constexpr int kKeyTile = 64;     // keys converted and scored at a time

// Per-thread buffers, grown on demand and kept between calls.
struct Scratch {
  std::vector<float> k, v;     // [kKeyTile, Dh] converted tile (non-f32 caches)
  std::vector<float> scores;   // [kKeyTile]
  std::vector<float> acc;      // [kQueryBlock, Dh] unnormalised outputs
  float running_max[kQueryBlock];
  float running_sum[kQueryBlock];
};

// A tile of keys or values of one kv head: row j at rows + j * stride, f32.
struct KvTile {
  const float* rows;
  int64_t stride;
};

struct AttentionJob {
  const float* q;  // [B*T, H*Dh]
  float* out;      // [B*T, H*Dh]
  const void* k_cache;
  const void* v_cache;  // [B, S_max, Hkv*Dh]
  int64_t s_max;
  AttentionParams p;
  BatchLayout layout;
};

inline float dot(const float* a, const float* b, int n) {
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

// Folds the first `visible` keys of a tile into one query's running softmax state.
// q: [Dh]; acc: [Dh]; scores: [>= visible]
void online_softmax_update(const float* q, KvTile k, KvTile v, int visible, int dh, float scale, float& running_max,
                           float& running_sum, float* acc, float* scores) {
  float tile_max = -INFINITY;
  for (int j = 0; j < visible; ++j) {
    scores[j] = scale * dot(q, k.rows + j * k.stride, dh);
    tile_max = std::max(tile_max, scores[j]);
  }
  const float new_max = std::max(running_max, tile_max);
  const float correction = std::exp(running_max - new_max);  // 0 on the first tile (max = -inf)
  running_sum *= correction;
#pragma omp simd
  for (int i = 0; i < dh; ++i) acc[i] *= correction;
  for (int j = 0; j < visible; ++j) {
    const float weight = std::exp(scores[j] - new_max);
    running_sum += weight;
    const float* vj = v.rows + j * v.stride;
#pragma omp simd
    for (int i = 0; i < dh; ++i) acc[i] += weight * vj[i];
  }
  running_max = new_max;
}

// Rows s0 .. s0+ns of kv head `kvh` of sequence b, as f32 (converted into `buffer` unless f32).
template <DType C>
KvTile load_tile(const void* cache, const AttentionJob& job, int b, int kvh, int64_t s0, int ns,
                 std::vector<float>& buffer) {
  const int dh = job.p.head_dim;
  const int64_t width = int64_t{job.p.kv_heads} * dh;
  const int64_t first = (int64_t{b} * job.s_max + s0) * width + int64_t{kvh} * dh;
  if constexpr (C == DType::kF32) {
    return {static_cast<const float*>(cache) + first, width};
  } else {
    buffer.resize(size_t{kKeyTile} * dh);
    for (int j = 0; j < ns; ++j)
      simd::convert<C>(static_cast<const uint16_t*>(cache) + first + j * width, dh, buffer.data() + j * dh);
    return {buffer.data(), dh};
  }
}

// Attention of query rows t0 .. t0+nq of sequence b, head h.
template <DType C>
void attend_block(const AttentionJob& job, int b, int h, int t0, int nq, Scratch& s) {
  const int dh = job.p.head_dim, kvh = h / (job.p.heads / job.p.kv_heads), past = job.layout.past(b);
  const int64_t q_stride = int64_t{job.p.heads} * dh;
  const int64_t row0 = int64_t{b} * job.layout.tokens + t0;
  s.acc.assign(size_t{kQueryBlock} * dh, 0.f);
  s.scores.resize(kKeyTile);
  std::fill_n(s.running_max, nq, -INFINITY);
  std::fill_n(s.running_sum, nq, 0.f);
  const int64_t kv_end = past + t0 + nq;  // keys seen by the block's last query
  for (int64_t s0 = 0; s0 < kv_end; s0 += kKeyTile) {
    const int ns = static_cast<int>(std::min<int64_t>(kKeyTile, kv_end - s0));
    const KvTile k = load_tile<C>(job.k_cache, job, b, kvh, s0, ns, s.k);
    const KvTile v = load_tile<C>(job.v_cache, job, b, kvh, s0, ns, s.v);
    for (int i = 0; i < nq; ++i) {
      const int visible = static_cast<int>(std::min<int64_t>(ns, past + t0 + i + 1 - s0));
      if (visible <= 0) continue;
      const float* qi = job.q + (row0 + i) * q_stride + int64_t{h} * dh;
      online_softmax_update(qi, k, v, visible, dh, job.p.scale, s.running_max[i], s.running_sum[i],
                            s.acc.data() + i * dh, s.scores.data());
    }
  }
  for (int i = 0; i < nq; ++i) {
    float* oi = job.out + (row0 + i) * q_stride + int64_t{h} * dh;
    const float inv = 1.f / s.running_sum[i];
    for (int d = 0; d < dh; ++d) oi[d] = s.acc[i * dh + d] * inv;
  }
}

template <DType C>
void attention_all(const AttentionJob& job) {
  const int blocks_per_seq = (job.layout.tokens + kQueryBlock - 1) / kQueryBlock;
  const int64_t n_items = int64_t{job.layout.batch} * job.p.heads * blocks_per_seq;
#pragma omp parallel
  {
    thread_local Scratch scratch;
#pragma omp for schedule(dynamic)
    for (int64_t item = 0; item < n_items; ++item) {
      const int blk = static_cast<int>(item % blocks_per_seq);
      const int h = static_cast<int>(item / blocks_per_seq % job.p.heads);
      const int b = static_cast<int>(item / blocks_per_seq / job.p.heads);
      const int t0 = blk * kQueryBlock;
      attend_block<C>(job, b, h, t0, std::min(kQueryBlock, job.layout.tokens - t0), scratch);
    }
  }
}

}  // namespace

void attention_cpu(View out, View q, View k_cache, View v_cache, const AttentionParams& p,
                   const BatchLayout& layout) {
  check_attention(out, q, k_cache, v_cache, p, layout);
  COMPACTOR_ASSERT(out.dtype == DType::kF32 && q.dtype == DType::kF32, "attention (cpu): out {} and q {} must be f32",
                   dtype_name(out.dtype), dtype_name(q.dtype));
  COMPACTOR_ASSERT(k_cache.dtype == v_cache.dtype, "attention (cpu): k cache {} vs v cache {}",
                   dtype_name(k_cache.dtype), dtype_name(v_cache.dtype));
  const AttentionJob job{q.as<const float>(), out.as<float>(), k_cache.data, v_cache.data, k_cache.shape[1], p, layout};
  switch (k_cache.dtype) {
    case DType::kF32: return attention_all<DType::kF32>(job);
    case DType::kF16: return attention_all<DType::kF16>(job);
    case DType::kBF16: return attention_all<DType::kBF16>(job);
    default: COMPACTOR_ASSERT(false, "attention (cpu): cache dtype {}", dtype_name(k_cache.dtype));
  }
}

}  // namespace compactor
