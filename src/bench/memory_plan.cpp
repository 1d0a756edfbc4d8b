// Memory estimates for benchmark points (see memory_plan.h). Test: build-*/tests/test_memory_plan.
#include "bench/memory_plan.h"

#include <fmt/format.h>

namespace compactor {

namespace {
constexpr int64_t kCublasWorkspace = int64_t{32} << 20;
constexpr int64_t kMargin = int64_t{256} << 20;  // cuBLAS handles and kernels' own buffers, fragmentation

std::string gb(int64_t b) { return fmt::format("{:.2f} GB", static_cast<double>(b) / 1e9); }
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
