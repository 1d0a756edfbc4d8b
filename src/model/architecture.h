// Architecture registry: a declarative mapping from a Hugging Face architecture to the tensor
// names of its checkpoint and the features its forward needs. One file per architecture
// (llama.cpp, mistral.cpp, qwen2.cpp) registers its spec; the forward is shared (blocks.cpp).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "io/hf_config.h"

namespace compactor {

// Names of one architecture's tensors; "{}" stands for the layer index.
struct TensorNames {
  std::string embed = "model.embed_tokens.weight";
  std::string final_norm = "model.norm.weight";
  std::string lm_head = "lm_head.weight";
  std::string attn_norm = "model.layers.{}.input_layernorm.weight";
  std::string mlp_norm = "model.layers.{}.post_attention_layernorm.weight";
  std::string q = "model.layers.{}.self_attn.q_proj";
  std::string k = "model.layers.{}.self_attn.k_proj";
  std::string v = "model.layers.{}.self_attn.v_proj";
  std::string o = "model.layers.{}.self_attn.o_proj";
  std::string gate = "model.layers.{}.mlp.gate_proj";
  std::string up = "model.layers.{}.mlp.up_proj";
  std::string down = "model.layers.{}.mlp.down_proj";
};

struct ArchitectureSpec {
  std::string hf_name;      // "LlamaForCausalLM"
  std::string model_type;   // "llama"
  TensorNames names;
  // Which linears carry a bias, decided from the config (Qwen2: q/k/v always; Llama: attention_bias).
  bool (*has_bias)(const ModelConfig& cfg, std::string_view linear) = nullptr;
  // Linear groups that share an input (calibration compresses them together), in forward order.
  std::vector<std::vector<std::string>> linear_groups = {{"q", "k", "v"}, {"o"}, {"gate", "up"}, {"down"}};
};

// The spec for cfg.architecture, or an error naming it and the supported list.
Result<const ArchitectureSpec*> find_architecture(const ModelConfig& cfg);
std::vector<std::string> supported_architectures();

// Registration from the per-architecture files.
const ArchitectureSpec& llama_architecture();
const ArchitectureSpec& mistral_architecture();
const ArchitectureSpec& qwen2_architecture();

// "model.layers.{}.mlp.up_proj" with layer 3 -> "model.layers.3.mlp.up_proj"
std::string layer_tensor_name(const std::string& pattern, int layer);

}  // namespace compactor
