// Shape and dtype invariants of the Backend ops; see op_checks.h.
#include "backend/cpu/op_checks.h"

namespace compactor {

bool is_float_dtype(DType d) { return d == DType::kF32 || d == DType::kF16 || d == DType::kBF16; }

namespace {

void check_float(const char* op, const char* name, View v) {
  COMPACTOR_ASSERT(v.data != nullptr || v.numel() == 0, "{}: {} has no data", op, name);
  COMPACTOR_ASSERT(is_float_dtype(v.dtype), "{}: {} is {}, expected f32/f16/bf16", op, name, dtype_name(v.dtype));
}

void check_cache(const char* op, View cache, View kv, const BatchLayout& layout) {
  check_float(op, "cache", cache);
  COMPACTOR_ASSERT(cache.shape.ndim == 3 && cache.shape[0] == layout.batch && cache.shape[2] == kv.cols(),
                   "{}: cache {} must be [B={}, S_max, {}]", op, cache.shape.str(), layout.batch, kv.cols());
  for (int b = 0; b < layout.batch; ++b)
    COMPACTOR_ASSERT(layout.past(b) >= 0 && layout.past(b) + layout.tokens <= cache.shape[1],
                     "{}: sequence {} has past {} + {} tokens, cache {} holds {}", op, b, layout.past(b),
                     layout.tokens, cache.shape.str(), cache.shape[1]);
}

void check_batch_rows(const char* op, View x, const BatchLayout& layout) {
  COMPACTOR_ASSERT(layout.batch > 0 && layout.tokens > 0, "{}: batch {} tokens {}", op, layout.batch, layout.tokens);
  COMPACTOR_ASSERT(x.rows() == int64_t{layout.batch} * layout.tokens, "{}: {} rows, expected B*T = {}*{}", op,
                   x.shape.str(), layout.batch, layout.tokens);
}

}  // namespace

int64_t check_rms_norm(const char* op, View out, View x, View weight) {
  check_float(op, "out", out);
  check_float(op, "x", x);
  check_float(op, "weight", weight);
  COMPACTOR_ASSERT(out.shape == x.shape, "{}: out {} vs x {}", op, out.shape.str(), x.shape.str());
  COMPACTOR_ASSERT(weight.numel() == x.cols(), "{}: weight {} vs x {}", op, weight.shape.str(), x.shape.str());
  return x.cols();
}

void check_same_shape(const char* op, View a, View b) {
  check_float(op, "lhs", a);
  check_float(op, "rhs", b);
  COMPACTOR_ASSERT(a.shape == b.shape, "{}: shapes {} and {} differ", op, a.shape.str(), b.shape.str());
}

void check_embedding(View out, View table) {
  check_float("embedding", "out", out);
  check_float("embedding", "table", table);
  COMPACTOR_ASSERT(table.shape.ndim == 2 && table.cols() == out.cols(), "embedding: table {} vs out {}",
                   table.shape.str(), out.shape.str());
}

void check_matmul(View out, View x, const LinearWeight& w) {
  check_float("matmul", "out", out);
  check_float("matmul", "x", x);
  Format f;
  COMPACTOR_ASSERT(format_from_dtype(w.weight.dtype, &f) && f == w.format,
                   "matmul: weight dtype {} vs format {} (expected a dense f32/f16/bf16 weight)",
                   dtype_name(w.weight.dtype), format_name(w.format));
  COMPACTOR_ASSERT(w.weight.shape == (Shape{w.out_features, w.in_features}), "matmul: weight {} vs [N={}, K={}]",
                   w.weight.shape.str(), w.out_features, w.in_features);
  COMPACTOR_ASSERT(x.cols() == w.in_features && out.cols() == w.out_features && out.rows() == x.rows(),
                   "matmul: out {} = x {} · wᵀ {}", out.shape.str(), x.shape.str(), w.weight.shape.str());
  if (w.bias.data != nullptr) {
    check_float("matmul", "bias", w.bias);
    COMPACTOR_ASSERT(w.bias.numel() == w.out_features, "matmul: bias {} vs N={}", w.bias.shape.str(), w.out_features);
  }
}

void check_rope(View x, int n_heads, int head_dim, const BatchLayout& layout) {
  check_float("rope", "x", x);
  check_batch_rows("rope", x, layout);
  COMPACTOR_ASSERT(head_dim > 0 && head_dim % 2 == 0 && x.cols() == int64_t{n_heads} * head_dim,
                   "rope: x {} vs {} heads of dim {} (even)", x.shape.str(), n_heads, head_dim);
}

void check_kv_store(View k_cache, View v_cache, View k, View v, const BatchLayout& layout) {
  check_same_shape("kv_store", k, v);
  check_batch_rows("kv_store", k, layout);
  check_cache("kv_store", k_cache, k, layout);
  check_cache("kv_store", v_cache, v, layout);
}

void check_attention(View out, View q, View k_cache, View v_cache, const AttentionParams& p,
                     const BatchLayout& layout) {
  check_same_shape("attention", out, q);
  check_batch_rows("attention", q, layout);
  COMPACTOR_ASSERT(p.heads > 0 && p.kv_heads > 0 && p.heads % p.kv_heads == 0 && p.head_dim > 0,
                   "attention: heads {} kv_heads {} head_dim {}", p.heads, p.kv_heads, p.head_dim);
  COMPACTOR_ASSERT(q.cols() == int64_t{p.heads} * p.head_dim, "attention: q {} vs {} heads of dim {}",
                   q.shape.str(), p.heads, p.head_dim);
  COMPACTOR_ASSERT(p.scale > 0.f, "attention: scale {} must be positive", p.scale);
  View kv_row{nullptr, Shape{1, int64_t{p.kv_heads} * p.head_dim}, q.dtype, q.device};
  check_cache("attention", k_cache, kv_row, layout);
  check_cache("attention", v_cache, kv_row, layout);
  COMPACTOR_ASSERT(k_cache.shape == v_cache.shape, "attention: k cache {} vs v cache {}", k_cache.shape.str(),
                   v_cache.shape.str());
}

void check_swiglu(View out, View gate, View up) {
  check_same_shape("swiglu", out, gate);
  check_same_shape("swiglu", gate, up);
}

void check_cross_entropy(View logits, const int32_t* targets) {
  check_float("cross_entropy", "logits", logits);
  for (int64_t t = 0; t < logits.rows(); ++t)
    COMPACTOR_ASSERT(targets[t] >= 0 && targets[t] < logits.cols(), "cross_entropy: target {} of row {} outside [0, {})",
                     targets[t], t, logits.cols());
}

}  // namespace compactor
