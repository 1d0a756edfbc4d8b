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
#include <string_view>
#include <vector>

#include "backend/backend.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "model/architecture.h"
#include "model/kv_cache.h"

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
  static Result<std::unique_ptr<Model>> load(const std::filesystem::path& dir, Backend& backend);
  ~Model();

  const ModelConfig& config() const { return config_; }
  const ArchitectureSpec& arch() const { return *arch_; }
  const ModelWeights& weights() const { return weights_; }
  ModelWeights& mutable_weights() { return weights_; }
  Backend& backend() const { return *backend_; }
  const std::filesystem::path& dir() const { return dir_; }
  const WeightFiles& files() const { return *files_; }

  KvCache make_kv_cache(int batch, int max_tokens) const;

  // Runs new tokens through the model, appending to `cache`. Returns logits on the backend:
  // kAll: [B*T, V], kLast: [B, V] (the last token of each sequence), kNone: an empty view.
  Result<View> forward(const ForwardRequest& req, KvCache& cache);

  int64_t parameter_count() const;

 private:
  Model();
  Status bind_weights();
  Result<View> place(const std::string& name, Shape expected, bool is_norm);
  Result<LinearWeight> place_linear(const std::string& base, int64_t out, int64_t in, bool has_bias);
  struct Scratch;
  Scratch& scratch(int64_t rows, int64_t logits_rows);

  std::filesystem::path dir_;
  ModelConfig config_;
  const ArchitectureSpec* arch_ = nullptr;
  Backend* backend_ = nullptr;
  std::shared_ptr<WeightFiles> files_;
  ModelWeights weights_;
  std::vector<Tensor> owned_;  // device copies / converted weights
  std::vector<float> inv_freq_;
  std::unique_ptr<Scratch> scratch_;
};

// RoPE inverse frequencies [Dh/2] for a config, with llama3/linear scaling applied.
std::vector<float> rope_inv_freq(const ModelConfig& cfg);

}  // namespace compactor
