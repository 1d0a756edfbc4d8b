// Qwen2ForCausalLM (Qwen2/2.5): Llama's layout with biases on q/k/v (never on o or the MLP).
#include "model/architecture.h"

namespace compactor {

const ArchitectureSpec& qwen2_architecture() {
  static const ArchitectureSpec spec = [] {
    ArchitectureSpec s;
    s.hf_name = "Qwen2ForCausalLM";
    s.model_type = "qwen2";
    s.has_bias = [](const ModelConfig&, std::string_view linear) {
      return linear == "q" || linear == "k" || linear == "v";
    };
    return s;
  }();
  return spec;
}

}  // namespace compactor
