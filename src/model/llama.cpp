// LlamaForCausalLM (Llama-2/3, SmolLM, TinyLlama): the reference layout. Optional attention
// biases (q/k/v/o) when config.attention_bias; MLP biases when config.mlp_bias.
#include "model/architecture.h"

namespace compactor {

namespace {
bool llama_has_bias(const ModelConfig& cfg, std::string_view linear) {
  if (linear == "q" || linear == "k" || linear == "v" || linear == "o") return cfg.attention_bias;
  return cfg.mlp_bias;
}
}  // namespace

const ArchitectureSpec& llama_architecture() {
  static const ArchitectureSpec spec = [] {
    ArchitectureSpec s;
    s.hf_name = "LlamaForCausalLM";
    s.model_type = "llama";
    s.has_bias = llama_has_bias;
    return s;
  }();
  return spec;
}

}  // namespace compactor
