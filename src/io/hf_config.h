// Hugging Face config.json of decoder-only Llama-family models (LlamaForCausalLM,
// MistralForCausalLM, Qwen2ForCausalLM) parsed into one plain struct.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/status.h"

namespace compactor {

enum class RopeType { kDefault, kLlama3, kLinear };

struct RopeScaling {
  RopeType type = RopeType::kDefault;
  double factor = 1.0;                        // llama3 / linear
  double low_freq_factor = 1.0;               // llama3
  double high_freq_factor = 4.0;              // llama3
  int64_t original_max_position_embeddings = 8192;  // llama3
};

struct ModelConfig {
  std::string architecture;     // "LlamaForCausalLM" (first entry of `architectures`)
  std::string model_type;       // "llama" | "mistral" | "qwen2"
  int64_t vocab_size = 0;       // V
  int64_t hidden_size = 0;      // D
  int64_t intermediate_size = 0;  // F
  int64_t num_layers = 0;
  int64_t num_heads = 0;        // H
  int64_t num_kv_heads = 0;     // Hkv (defaults to H)
  int64_t head_dim = 0;         // Dh (defaults to D / H)
  int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v (and o for Llama's attention_bias) biases
  bool qkv_bias = false;        // Qwen2: q/k/v have biases, o has none
  bool mlp_bias = false;
  int64_t sliding_window = 0;   // Mistral/Qwen2; 0 = none
  std::string hidden_act = "silu";
  std::string torch_dtype;      // "bfloat16" etc., informative
  int64_t bos_token_id = -1;
  std::vector<int64_t> eos_token_ids;
  nlohmann::json raw;           // the whole file, for round-tripping into compressed dirs
};

// Parses `dir/config.json`. Errors name the file and the key and what was expected.
Result<ModelConfig> load_model_config(const std::filesystem::path& dir);
Result<ModelConfig> parse_model_config(const nlohmann::json& j, const std::string& source_name);

}  // namespace compactor
