// A loaded decoder-only model: its config, architecture spec and weights placed on one backend,
// and an eager forward pass that calls `tap(name, layer, view)` at every named intermediate
// (calibration, statistics and debugging read activations through taps, not through model code).
//
// Tap names, per layer (layer = -1 for the model-level ones):
//   layer_input [BT,D]  attn_norm [BT,D] (input of q/k/v)  q,k,v [BT,H*Dh | Hkv*Dh] (after RoPE)
//   attn_output [BT,H*Dh] (input of o)  attn_out [BT,D]  ffn_norm [BT,D] (input of gate/up)
//   ffn_act [BT,F] (input of down)  ffn_out [BT,D]  final_norm [rows,D] (-1)  logits [rows,V] (-1)
#pragma once

#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "backend/backend.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "model/architecture.h"
#include "model/kv_cache.h"
#include "model/quant_config.h"

namespace compactor {

using TapFn = std::function<void(std::string_view name, int layer, View value)>;

struct LayerWeights {
  View attn_norm;  // [D]
  View mlp_norm;   // [D]
  LinearWeight q, k, v, o, gate, up, down;
  LinearWeight* linear(std::string_view short_name);  // "q" .. "down"
};

struct ModelWeights {
  View embed;       // [V, D]
  View final_norm;  // [D]
  LinearWeight lm_head;
  std::vector<LayerWeights> layers;
};

// Storage of a model's weights, for reports: parameters count [N, K] per packed linear (not its
// int32 words); bytes are what the safetensors files hold.
struct WeightBits {
  int64_t params = 0;            // all weights (embeddings, norms, linears, biases)
  int64_t bytes = 0;
  int64_t quantized_params = 0;  // weights of packed linears
  int64_t quantized_bytes = 0;   // their qweight + scales + qzeros + g_idx
  double bits_per_weight() const { return params ? 8.0 * bytes / params : 0.0; }
  double quantized_bits_per_weight() const { return quantized_params ? 8.0 * quantized_bytes / quantized_params : 0.0; }
};

enum class LogitsMode { kAll, kLast, kNone };

struct ForwardRequest {
  const int32_t* ids = nullptr;  // [B*T] host
  BatchLayout layout;
  LogitsMode logits = LogitsMode::kAll;
  const TapFn* tap = nullptr;
};

class Model {
 public:
  // Loads dir (config.json + safetensors) onto `backend`. The backend must outlive the model.
  // Compressed directories (config.json with a quantization_config) load transparently: packed
  // linears are bound as quantized LinearWeights (CPU: mmapped views; other devices: uploads).
  static Result<std::unique_ptr<Model>> load(const std::filesystem::path& dir, Backend& backend);
  // A model of `config` with every weight allocated on `backend` (same shapes and dtypes as load)
  // but not initialised, and no files behind it (files() must not be called; has_files() is
  // false). Synthetic models (model/synthetic.h) fill the weights. Linears that `quant` lists are
  // allocated as packed tensors (quant_pack.h) instead, and quantization() returns `quant`.
  static Result<std::unique_ptr<Model>> allocate(const ModelConfig& config, Backend& backend,
                                                 const QuantizationConfig* quant = nullptr);
  ~Model();

  const ModelConfig& config() const { return config_; }
  const ArchitectureSpec& arch() const { return *arch_; }
  const ModelWeights& weights() const { return weights_; }
  ModelWeights& mutable_weights() { return weights_; }
  Backend& backend() const { return *backend_; }
  const std::filesystem::path& dir() const { return dir_; }
  const WeightFiles& files() const { return *files_; }
  bool has_files() const { return files_ != nullptr; }

  KvCache make_kv_cache(int batch, int max_tokens) const;

  // Runs new tokens through the model, appending to `cache`. Returns logits on the backend:
  // kAll: [B*T, V], kLast: [B, V] (the last token of each sequence), kNone: an empty view.
  Result<View> forward(const ForwardRequest& req, KvCache& cache);

  int64_t parameter_count() const;  // weight_bits().params
  // Every linear with its HF module name ("model.layers.0.self_attn.q_proj", ..., "lm_head"
  // unless tied to the embeddings), in forward order.
  std::vector<std::pair<std::string, const LinearWeight*>> named_linears() const;
  WeightBits weight_bits() const;
  // nullptr for a dense checkpoint.
  const QuantizationConfig* quantization() const { return quant_ ? &*quant_ : nullptr; }

  // Layer-by-layer use (calibration drivers): the pieces of forward() one at a time.
  // x: [rows, D] act on the backend <- embedding rows of ids: [rows] (host).
  Status embed(View x, const int32_t* ids) const;
  // Runs decoder block `layer` on the residual stream x: [B*T, D] act in place (x becomes the
  // block's output), storing keys/values in cache.k/v[layer] at positions layout.past(b) + t. Does
  // not advance cache.lengths (forward() does that once per call). Taps as in forward().
  // With `stop_after` set to a tap name, the block stops right after that tap: callers that only
  // need an early intermediate skip the rest of the block (x is then partly updated: pass a copy).
  Status forward_block(int layer, View x, const BatchLayout& layout, KvCache& cache, const TapFn* tap = nullptr,
                       std::string_view stop_after = {});

  // Weight replacement (compressors apply their results; the model keeps `weight` alive).
  // Linear `name` ("q" .. "down") of `layer`, or "lm_head" with layer -1; weight: [N, K] f32
  // (host). The bias is kept.
  Status replace_linear(int layer, std::string_view name, Tensor weight);
  // Norm weight "attn_norm" | "mlp_norm" of `layer`, or "final_norm" with layer -1; weight: [D] f32 (host).
  Status replace_norm(int layer, std::string_view name, Tensor weight);

 private:
  Model();
  Status bind_weights();
  Result<View> place(const std::string& name, Shape expected, bool is_norm);
  Result<LinearWeight> place_linear(const std::string& base, int64_t out, int64_t in, bool has_bias);
  Result<LinearWeight> place_packed(const std::string& base, const ModuleQuantization& q, int64_t out, int64_t in);
  Result<LinearWeight> place_nf4(const std::string& base, const ModuleQuantization& q, int64_t out, int64_t in);
  Result<View> place_raw(const std::string& name);  // as stored (CPU: the mapping; else: upload)
  struct Scratch;
  Scratch& scratch(int64_t rows, int64_t logits_rows);
  void run_block(int layer, View x, const BatchLayout& layout, KvCache& cache, const TapFn* tap, Scratch& s,
                 std::string_view stop_after = {});
  Result<View> own_on_backend(Tensor host_f32, bool is_norm);

  std::filesystem::path dir_;
  ModelConfig config_;
  const ArchitectureSpec* arch_ = nullptr;
  Backend* backend_ = nullptr;
  std::shared_ptr<WeightFiles> files_;
  std::optional<QuantizationConfig> quant_;
  ModelWeights weights_;
  std::vector<Tensor> owned_;  // device copies / converted weights
  std::vector<float> inv_freq_;
  std::unique_ptr<Scratch> scratch_;
};

// RoPE inverse frequencies [Dh/2] for a config, with llama3/linear scaling applied.
std::vector<float> rope_inv_freq(const ModelConfig& cfg);

}  // namespace compactor
