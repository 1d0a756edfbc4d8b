// Memory estimates for benchmark points (see memory_plan.h). Test: build-*/tests/test_bench_plan, test_synthetic_model.
#include "bench/memory_plan.h"

#include <algorithm>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "formats/quant_pack.h"
#include "formats/quant_repack.h"
#include "model/model.h"

namespace compactor {

namespace {
constexpr int64_t kCublasWorkspace = int64_t{32} << 20;
constexpr int64_t kMargin = int64_t{256} << 20;  // cuBLAS handles and kernels' own buffers, fragmentation

std::string gb(int64_t b) { return fmt::format("{:.2f} GB", static_cast<double>(b) / 1e9); }

// [N, K] of the linears of one block: q, k, v, o, gate, up, down.
std::vector<std::pair<int64_t, int64_t>> block_linears(const ModelConfig& c) {
  const int64_t d = c.hidden_size, f = c.intermediate_size;
  const int64_t q_out = c.num_heads * c.head_dim, kv_out = c.num_kv_heads * c.head_dim;
  return {{q_out, d}, {kv_out, d}, {kv_out, d}, {d, q_out}, {f, d}, {f, d}, {d, f}};
}
}  // namespace

std::string MemoryEstimate::describe() const {
  return fmt::format("{} weights + {} KV cache + {} activations + {} logits + {} workspace = {}", gb(weights),
                     gb(kv_cache), gb(activations), gb(logits), gb(workspace), gb(total()));
}

int64_t estimate_weight_bytes(const ModelConfig& c, int bytes) {
  const int64_t d = c.hidden_size, f = c.intermediate_size, dh = c.head_dim;
  const int64_t per_layer = d * c.num_heads * dh * 2 + d * c.num_kv_heads * dh * 2 + 3 * d * f;
  int64_t n = c.num_layers * per_layer + c.vocab_size * d * (c.tie_word_embeddings ? 1 : 2);
  return n * bytes + (2 * c.num_layers + 1) * d * 4;
}

int64_t estimate_quantized_weight_bytes(const ModelConfig& c, const QuantSpec& spec, bool act_order, bool lm_head,
                                        int dense_bytes) {
  const int64_t d = c.hidden_size;
  int64_t total = 0;
  for (const auto& [n, k] : block_linears(c)) total += c.num_layers * quant_packed_bytes(spec, n, k, act_order);
  total += c.vocab_size * d * dense_bytes;  // embeddings
  if (!c.tie_word_embeddings)
    total += lm_head ? quant_packed_bytes(spec, c.vocab_size, d, act_order) : c.vocab_size * d * dense_bytes;
  return total + (2 * c.num_layers + 1) * d * 4;
}

int64_t repacked_linear_bytes(int bits, int group_size, int64_t n, int64_t k, bool act_order) {
  auto plan = plan_repack(bits, group_size, n, k, nullptr, nullptr);
  if (!plan.is_ok()) return 0;
  const RepackPlan& p = *plan;
  // The tensor-core layouts pad the rows to whole tiles.
  const int64_t rows = tc_layout_supported(bits, false, group_size, act_order) ? tc_padded_rows(n) : n;
  return rows * p.words_per_row * 4 + n * p.groups_padded * 4 + (act_order ? p.k_padded * 4 : 0);
}

int64_t estimate_quantized_runtime_bytes(const ModelConfig& c, const QuantSpec& spec, bool act_order, bool lm_head,
                                         int act_bytes) {
  int64_t repacked = 0, largest = 0;
  for (const auto& [n, k] : block_linears(c)) {
    repacked += c.num_layers * repacked_linear_bytes(spec.bits, spec.group_size, n, k, act_order);
    largest = std::max(largest, n * k);
  }
  if (lm_head && !c.tie_word_embeddings) {
    repacked += repacked_linear_bytes(spec.bits, spec.group_size, c.vocab_size, c.hidden_size, act_order);
    largest = std::max(largest, c.vocab_size * c.hidden_size);
  }
  return repacked + largest * act_bytes;
}

int64_t quantized_runtime_bytes(const Model& model, int act_bytes) {
  int64_t repacked = 0, largest = 0;
  for (const auto& [name, w] : model.named_linears()) {
    if (!w->quantized()) continue;
    repacked += repacked_linear_bytes(w->bits(), w->group_size, w->out_features, w->in_features, w->g_idx.data != nullptr);
    largest = std::max(largest, w->out_features * w->in_features);
  }
  return repacked + largest * act_bytes;
}

MemoryEstimate estimate_memory(const ModelConfig& c, int64_t weights, int act_bytes, int batch, int prompt,
                               int context) {
  MemoryEstimate e;
  const int64_t b = batch, d = c.hidden_size, f = c.intermediate_size;
  const int64_t q_dim = c.num_heads * c.head_dim, kv_dim = c.num_kv_heads * c.head_dim;
  e.weights = weights;
  e.kv_cache = b * context * c.num_layers * 2 * kv_dim * act_bytes;
  const int64_t rows = b * prompt;
  // x, h, proj [D]; q, attn [H*Dh]; k, v [Hkv*Dh]; gate, up, act [F] (Model's scratch), and the
  // decode step's scratch, which exists for a moment next to the prefill's.
  const int64_t per_row = 3 * d + 2 * q_dim + 2 * kv_dim + 3 * f;
  e.activations = (rows + b) * per_row * act_bytes;
  e.logits = 2 * b * (c.vocab_size + d) * act_bytes;
  // Split-key attention partials: at most 64 splits × B × H × (Dh + 1) f32.
  e.workspace = kCublasWorkspace + kMargin + 64 * b * c.num_heads * (c.head_dim + 1) * 4;
  return e;
}

Status check_memory_fits(const MemoryEstimate& e, int64_t allocated, int64_t free_bytes, const std::string& what) {
  const int64_t needed = e.total() - allocated;
  if (needed <= free_bytes) return Status::ok();
  return Status(StatusCode::kOutOfMemory,
                fmt::format("not enough GPU memory for {}: needs {} more (estimate: {}), {} free; use a smaller batch, "
                            "prompt or --gen",
                            what, gb(needed), e.describe(), gb(free_bytes)));
}

}  // namespace compactor
