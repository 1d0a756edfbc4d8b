// The shared decoder forward of every registered architecture (pre-norm Llama block):
//   x = embed(ids)
//   per layer: h = norm(x); q,k,v = h·W; rope(q,k); cache(k,v); a = attn(q, cache)
//              x += a·Wo; h = norm(x); x += down(silu(h·Wg) * (h·Wu))
//   logits = norm(x)·Wlm
// Each named intermediate is passed to the optional tap (see model.h for the names).
#include <fmt/format.h>

#include "model/model.h"

namespace compactor {

// Activation buffers reused across calls with the same row counts (allocation on an accelerator
// is far too slow for the decode loop).
struct Model::Scratch {
  int64_t rows = -1, logits_rows = -1;
  Tensor x, h, q, k, v, attn, proj, gate, up, act, last, logits;
};

Model::Model() = default;
Model::~Model() = default;

Model::Scratch& Model::scratch(int64_t rows, int64_t logits_rows) {
  if (scratch_ && scratch_->rows == rows && scratch_->logits_rows == logits_rows) return *scratch_;
  const ModelConfig& c = config_;
  const DType a = backend_->activation_dtype();
  auto s = std::make_unique<Scratch>();
  s->rows = rows;
  s->logits_rows = logits_rows;
  auto buf = [&](int64_t r, int64_t cols) { return backend_->alloc(Shape{r, cols}, a); };
  s->x = buf(rows, c.hidden_size);
  s->h = buf(rows, c.hidden_size);
  s->q = buf(rows, c.num_heads * c.head_dim);
  s->k = buf(rows, c.num_kv_heads * c.head_dim);
  s->v = buf(rows, c.num_kv_heads * c.head_dim);
  s->attn = buf(rows, c.num_heads * c.head_dim);
  s->proj = buf(rows, c.hidden_size);
  s->gate = buf(rows, c.intermediate_size);
  s->up = buf(rows, c.intermediate_size);
  s->act = buf(rows, c.intermediate_size);
  if (logits_rows > 0) {
    s->last = buf(logits_rows, c.hidden_size);
    s->logits = buf(logits_rows, c.vocab_size);
  }
  scratch_ = std::move(s);
  return *scratch_;
}

namespace {

void emit(const TapFn* tap, std::string_view name, int layer, View v) {
  if (tap != nullptr && *tap) (*tap)(name, layer, v);
}

Status check_request(const ForwardRequest& req, const KvCache& cache, const ModelConfig& c) {
  const BatchLayout& L = req.layout;
  if (req.ids == nullptr || L.batch <= 0 || L.tokens <= 0)
    return invalid_argument("forward: empty batch (batch {}, tokens {})", L.batch, L.tokens);
  if (L.batch != cache.batch)
    return invalid_argument("forward: batch {} does not match the KV cache's batch {}", L.batch, cache.batch);
  for (int b = 0; b < L.batch; ++b) {
    const int end = L.past(b) + L.tokens;
    if (end > cache.capacity)
      return invalid_argument("forward: sequence {} needs {} positions but the KV cache holds {}", b, end,
                              cache.capacity);
    if (end > c.max_position_embeddings)
      return invalid_argument("forward: sequence {} reaches position {} beyond the model's maximum {} "
                              "(max_position_embeddings)", b, end, c.max_position_embeddings);
    if (c.sliding_window > 0 && end > c.sliding_window)
      return unsupported("forward: position {} exceeds the sliding window {}; windowed attention is not "
                         "implemented yet", end, c.sliding_window);
  }
  for (int64_t i = 0; i < static_cast<int64_t>(L.batch) * L.tokens; ++i)
    if (req.ids[i] < 0 || req.ids[i] >= c.vocab_size)
      return invalid_argument("forward: token id {} at position {} is outside the vocabulary [0, {})", req.ids[i],
                              i, c.vocab_size);
  return Status::ok();
}

}  // namespace

Result<View> Model::forward(const ForwardRequest& req, KvCache& cache) {
  const ModelConfig& c = config_;
  RETURN_IF_ERROR(check_request(req, cache, c));
  BatchLayout layout = req.layout;
  std::vector<int32_t> past = cache.lengths;
  layout.n_past = past.data();
  const int64_t rows = static_cast<int64_t>(layout.batch) * layout.tokens;
  const int64_t logits_rows = req.logits == LogitsMode::kAll ? rows : req.logits == LogitsMode::kLast ? layout.batch : 0;
  Scratch& s = scratch(rows, logits_rows);
  Backend& be = *backend_;
  const float eps = static_cast<float>(c.rms_norm_eps);

  be.embedding(s.x, req.ids, weights_.embed);
  for (int l = 0; l < c.num_layers; ++l) run_block(l, s.x, layout, cache, req.tap, s);
  for (int b = 0; b < layout.batch; ++b) cache.lengths[b] += layout.tokens;
  if (req.logits == LogitsMode::kNone) return View{};

  View normed = req.logits == LogitsMode::kLast ? View(s.last) : View(s.h);
  View normed_input = s.x;
  if (req.logits == LogitsMode::kLast && layout.tokens > 1) {
    // Gather each sequence's last row; only those rows are normalised and projected.
    for (int b = 0; b < layout.batch; ++b)
      be.copy(normed.row_slice(b, 1), View(s.x).row_slice(static_cast<int64_t>(b) * layout.tokens + layout.tokens - 1, 1));
    normed_input = normed;
  }
  be.rms_norm(normed, normed_input, weights_.final_norm, eps);
  emit(req.tap, "final_norm", -1, normed);
  be.matmul(s.logits, normed, weights_.lm_head);
  emit(req.tap, "logits", -1, s.logits);
  return s.logits.view();
}

namespace {

struct BlockViews {
  View x, h, q, k, v, attn, proj, gate, up, act, k_cache, v_cache;
};

// The block through the backend's fusion points (whose defaults are the separate ops), for when
// no tap observes its intermediates: on CUDA a decode step then takes 7 launches per layer.
void fused_block(Backend& be, const LayerWeights& w, const AttentionParams& ap, float eps, const float* inv_freq,
                 const BatchLayout& layout, const BlockViews& b) {
  const View qkv_out[] = {b.q, b.k, b.v};
  const LinearWeight* qkv[] = {&w.q, &w.k, &w.v};
  be.rms_norm_matmul_group(qkv_out, b.x, w.attn_norm, eps, qkv, 3, b.h);
  be.rope_kv_store(b.q, b.k, b.v, b.k_cache, b.v_cache, ap.heads, ap.kv_heads, ap.head_dim, inv_freq, layout);
  be.attention(b.attn, b.q, b.k_cache, b.v_cache, ap, layout);
  be.matmul_add(b.x, b.attn, w.o, b.proj);
  const View gate_up_out[] = {b.gate, b.up};
  const LinearWeight* gate_up[] = {&w.gate, &w.up};
  be.rms_norm_matmul_group(gate_up_out, b.x, w.mlp_norm, eps, gate_up, 2, b.h);
  be.swiglu_matmul_add(b.x, b.gate, b.up, w.down, b.act, b.proj);
}

}  // namespace

// One pre-norm decoder block on the residual stream x (scratch buffers of s, sized for x's rows).
void Model::run_block(int l, View x, const BatchLayout& layout, KvCache& cache, const TapFn* tap, Scratch& s,
                      std::string_view stop_after) {
  const ModelConfig& c = config_;
  Backend& be = *backend_;
  const float eps = static_cast<float>(c.rms_norm_eps);
  const AttentionParams ap{static_cast<int>(c.num_heads), static_cast<int>(c.num_kv_heads),
                           static_cast<int>(c.head_dim), 1.0f / std::sqrt(static_cast<float>(c.head_dim))};
  const LayerWeights& w = weights_.layers[l];
  if ((tap == nullptr || !*tap) && stop_after.empty()) {
    fused_block(be, w, ap, eps, inv_freq_.data(), layout,
                BlockViews{x, s.h, s.q, s.k, s.v, s.attn, s.proj, s.gate, s.up, s.act, cache.k[l], cache.v[l]});
    return;
  }
  // Emits a tap; true when the caller asked to stop right after it.
  auto tap_stops = [&](std::string_view name, View v) {
    emit(tap, name, l, v);
    return !stop_after.empty() && name == stop_after;
  };
  if (tap_stops("layer_input", x)) return;
  be.rms_norm(s.h, x, w.attn_norm, eps);
  if (tap_stops("attn_norm", s.h)) return;
  const View qkv_out[] = {s.q, s.k, s.v};
  const LinearWeight* qkv[] = {&w.q, &w.k, &w.v};
  be.matmul_group(qkv_out, s.h, qkv, 3);
  be.rope(s.q, ap.heads, ap.head_dim, inv_freq_.data(), layout);
  be.rope(s.k, ap.kv_heads, ap.head_dim, inv_freq_.data(), layout);
  if (tap_stops("q", s.q) || tap_stops("k", s.k) || tap_stops("v", s.v)) return;
  be.kv_store(cache.k[l], cache.v[l], s.k, s.v, layout);
  be.attention(s.attn, s.q, cache.k[l], cache.v[l], ap, layout);
  if (tap_stops("attn_output", s.attn)) return;
  be.matmul(s.proj, s.attn, w.o);
  if (tap_stops("attn_out", s.proj)) return;
  be.add_rms_norm(s.h, x, s.proj, w.mlp_norm, eps);
  if (tap_stops("ffn_norm", s.h)) return;
  const View gate_up_out[] = {s.gate, s.up};
  const LinearWeight* gate_up[] = {&w.gate, &w.up};
  be.matmul_group(gate_up_out, s.h, gate_up, 2);
  be.swiglu(s.act, s.gate, s.up);
  if (tap_stops("ffn_act", s.act)) return;
  be.matmul(s.proj, s.act, w.down);
  if (tap_stops("ffn_out", s.proj)) return;
  be.add(x, s.proj);
}

Status Model::embed(View x, const int32_t* ids) const {
  if (x.shape.ndim != 2 || x.cols() != config_.hidden_size || x.dtype != backend_->activation_dtype())
    return invalid_argument("embed: x has shape {} {}; expected [rows, {}] {}", x.shape.str(), dtype_name(x.dtype),
                            config_.hidden_size, dtype_name(backend_->activation_dtype()));
  for (int64_t i = 0; i < x.rows(); ++i)
    if (ids[i] < 0 || ids[i] >= config_.vocab_size)
      return invalid_argument("embed: token id {} at position {} is outside the vocabulary [0, {})", ids[i], i,
                              config_.vocab_size);
  backend_->embedding(x, ids, weights_.embed);
  return Status::ok();
}

Status Model::forward_block(int layer, View x, const BatchLayout& layout, KvCache& cache, const TapFn* tap,
                            std::string_view stop_after) {
  const ModelConfig& c = config_;
  const int64_t rows = static_cast<int64_t>(layout.batch) * layout.tokens;
  if (layer < 0 || layer >= c.num_layers)
    return invalid_argument("forward_block: layer {} outside [0, {})", layer, c.num_layers);
  if (x.shape.ndim != 2 || x.rows() != rows || x.cols() != c.hidden_size || x.dtype != backend_->activation_dtype())
    return invalid_argument("forward_block: x has shape {} {}; expected [{}, {}] {}", x.shape.str(), dtype_name(x.dtype),
                            rows, c.hidden_size, dtype_name(backend_->activation_dtype()));
  if (layout.batch != cache.batch || static_cast<int>(cache.k.size()) <= layer)
    return invalid_argument("forward_block: the KV cache (batch {}, {} layers) does not fit batch {} / layer {}",
                            cache.batch, cache.k.size(), layout.batch, layer);
  for (int b = 0; b < layout.batch; ++b) {
    const int end = layout.past(b) + layout.tokens;
    if (end > cache.capacity)
      return invalid_argument("forward_block: sequence {} needs {} positions but the KV cache holds {}", b, end,
                              cache.capacity);
    if (end > c.max_position_embeddings || (c.sliding_window > 0 && end > c.sliding_window))
      return invalid_argument("forward_block: sequence {} reaches position {} beyond the model's maximum {} or its "
                              "sliding window {}", b, end, c.max_position_embeddings, c.sliding_window);
  }
  Scratch& s = scratch_ && scratch_->rows == rows ? *scratch_ : scratch(rows, 0);
  run_block(layer, x, layout, cache, tap, s, stop_after);
  return Status::ok();
}

}  // namespace compactor
