// Scalar reference ops (the spec); see ops_ref.h for the conventions.
// Test: build/tests/test_cpu_ops.
#include "backend/cpu/ops_ref.h"

#include <cmath>
#include <vector>

#include "backend/cpu/op_checks.h"

namespace compactor {

namespace {

// Element i of a float view (f32/f16/bf16) as f32.
float load(View v, int64_t i) {
  switch (v.dtype) {
    case DType::kF32: return v.as<const float>()[i];
    case DType::kF16: return f16_to_f32(v.as<const uint16_t>()[i]);
    case DType::kBF16: return bf16_to_f32(v.as<const uint16_t>()[i]);
    default: COMPACTOR_ASSERT(false, "load: {} is not a float dtype", dtype_name(v.dtype));
  }
}

void store(View v, int64_t i, float x) {
  switch (v.dtype) {
    case DType::kF32: v.as<float>()[i] = x; return;
    case DType::kF16: v.as<uint16_t>()[i] = f32_to_f16(x); return;
    case DType::kBF16: v.as<uint16_t>()[i] = f32_to_bf16(x); return;
    default: COMPACTOR_ASSERT(false, "store: {} is not a float dtype", dtype_name(v.dtype));
  }
}

// Writes the rms-normalised row r of `x` into row r of `out`.
void rms_norm_row(View out, View x, View weight, float eps, int64_t r) {
  const int64_t d = x.cols();
  double ss = 0;
  for (int64_t i = 0; i < d; ++i) ss += double(load(x, r * d + i)) * load(x, r * d + i);
  const float inv = static_cast<float>(1.0 / std::sqrt(ss / d + eps));
  for (int64_t i = 0; i < d; ++i) store(out, r * d + i, load(x, r * d + i) * inv * load(weight, i));
}

// One query vector against its visible keys; returns nothing, writes out[o .. o+Dh).
void attend_one(View out, int64_t o, View q, int64_t qo, View k_cache, View v_cache, int64_t cache_row0,
                int64_t kv_stride, int n_keys, const AttentionParams& p) {
  std::vector<double> score(n_keys);
  double max_score = -INFINITY;
  for (int s = 0; s < n_keys; ++s) {
    double dot = 0;
    for (int i = 0; i < p.head_dim; ++i) dot += double(load(q, qo + i)) * load(k_cache, cache_row0 + s * kv_stride + i);
    score[s] = dot * p.scale;
    max_score = std::max(max_score, score[s]);
  }
  double sum = 0;
  for (int s = 0; s < n_keys; ++s) sum += (score[s] = std::exp(score[s] - max_score));
  for (int i = 0; i < p.head_dim; ++i) {
    double acc = 0;
    for (int s = 0; s < n_keys; ++s) acc += score[s] * load(v_cache, cache_row0 + s * kv_stride + i);
    store(out, o + i, static_cast<float>(acc / sum));
  }
}

}  // namespace

void embedding_ref(View out, const int32_t* ids, View table) {
  check_embedding(out, table);
  const int64_t d = out.cols();
  for (int64_t t = 0; t < out.rows(); ++t) {
    COMPACTOR_ASSERT(ids[t] >= 0 && ids[t] < table.rows(), "embedding: id {} outside [0, {})", ids[t], table.rows());
    for (int64_t i = 0; i < d; ++i) store(out, t * d + i, load(table, ids[t] * d + i));
  }
}

void rms_norm_ref(View out, View x, View weight, float eps) {
  check_rms_norm("rms_norm", out, x, weight);
  for (int64_t r = 0; r < x.rows(); ++r) rms_norm_row(out, x, weight, eps, r);
}

void add_rms_norm_ref(View out, View residual, View delta, View weight, float eps) {
  add_ref(residual, delta);
  rms_norm_ref(out, residual, weight, eps);
}

void add_ref(View x, View delta) {
  check_same_shape("add", x, delta);
  for (int64_t i = 0; i < x.numel(); ++i) store(x, i, load(x, i) + load(delta, i));
}

void matmul_ref(View out, View x, const LinearWeight& w) {
  check_matmul(out, x, w);
  const int64_t n_out = w.out_features, k = w.in_features;
  for (int64_t t = 0; t < x.rows(); ++t) {
    for (int64_t n = 0; n < n_out; ++n) {
      double acc = w.bias.data ? load(w.bias, n) : 0.0;
      for (int64_t i = 0; i < k; ++i) acc += double(load(x, t * k + i)) * load(w.weight, n * k + i);
      store(out, t * n_out + n, static_cast<float>(acc));
    }
  }
}

void rope_ref(View x, int n_heads, int head_dim, const float* inv_freq, const BatchLayout& layout) {
  check_rope(x, n_heads, head_dim, layout);
  const int half = head_dim / 2;
  for (int b = 0; b < layout.batch; ++b) {
    for (int t = 0; t < layout.tokens; ++t) {
      const int64_t row = int64_t{b} * layout.tokens + t;
      const float pos = static_cast<float>(layout.past(b) + t);
      for (int h = 0; h < n_heads; ++h) {
        const int64_t base = row * x.cols() + int64_t{h} * head_dim;
        for (int i = 0; i < half; ++i) {
          const float angle = pos * inv_freq[i];  // an f32 product, as HF computes it
          const float c = static_cast<float>(std::cos(double(angle)));
          const float s = static_cast<float>(std::sin(double(angle)));
          const float x0 = load(x, base + i), x1 = load(x, base + i + half);
          store(x, base + i, x0 * c - x1 * s);
          store(x, base + i + half, x1 * c + x0 * s);
        }
      }
    }
  }
}

void kv_store_ref(View k_cache, View v_cache, View k, View v, const BatchLayout& layout) {
  check_kv_store(k_cache, v_cache, k, v, layout);
  const int64_t width = k.cols(), s_max = k_cache.shape[1];
  for (int b = 0; b < layout.batch; ++b) {
    for (int t = 0; t < layout.tokens; ++t) {
      const int64_t src = (int64_t{b} * layout.tokens + t) * width;
      const int64_t dst = (int64_t{b} * s_max + layout.past(b) + t) * width;
      for (int64_t i = 0; i < width; ++i) {
        store(k_cache, dst + i, load(k, src + i));
        store(v_cache, dst + i, load(v, src + i));
      }
    }
  }
}

void attention_ref(View out, View q, View k_cache, View v_cache, const AttentionParams& p,
                   const BatchLayout& layout) {
  check_attention(out, q, k_cache, v_cache, p, layout);
  const int group = p.heads / p.kv_heads;
  const int64_t s_max = k_cache.shape[1], kv_stride = int64_t{p.kv_heads} * p.head_dim;
  for (int b = 0; b < layout.batch; ++b) {
    for (int t = 0; t < layout.tokens; ++t) {
      const int64_t row = int64_t{b} * layout.tokens + t;
      for (int h = 0; h < p.heads; ++h) {
        const int64_t o = row * q.cols() + int64_t{h} * p.head_dim;
        const int64_t cache_row0 = int64_t{b} * s_max * kv_stride + int64_t{h / group} * p.head_dim;
        attend_one(out, o, q, o, k_cache, v_cache, cache_row0, kv_stride, layout.past(b) + t + 1, p);
      }
    }
  }
}

void swiglu_ref(View out, View gate, View up) {
  check_swiglu(out, gate, up);
  for (int64_t i = 0; i < out.numel(); ++i) {
    const float g = load(gate, i);
    store(out, i, g / (1.f + std::exp(-g)) * load(up, i));
  }
}

void cross_entropy_ref(float* nll, View logits, const int32_t* targets) {
  check_cross_entropy(logits, targets);
  const int64_t v = logits.cols();
  for (int64_t t = 0; t < logits.rows(); ++t) {
    double max_logit = -INFINITY;
    for (int64_t i = 0; i < v; ++i) max_logit = std::max(max_logit, double(load(logits, t * v + i)));
    double sum = 0;
    for (int64_t i = 0; i < v; ++i) sum += std::exp(load(logits, t * v + i) - max_logit);
    nll[t] = static_cast<float>(max_logit + std::log(sum) - load(logits, t * v + targets[t]));
  }
}

}  // namespace compactor
