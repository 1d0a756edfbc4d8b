// MistralForCausalLM: Llama's tensor layout without biases; sliding-window attention is carried
// in ModelConfig::sliding_window (windows longer than the context in use change nothing).
#include "model/architecture.h"

namespace compactor {

const ArchitectureSpec& mistral_architecture() {
  static const ArchitectureSpec spec = [] {
    ArchitectureSpec s;
    s.hf_name = "MistralForCausalLM";
    s.model_type = "mistral";
    s.has_bias = [](const ModelConfig&, std::string_view) { return false; };
    return s;
  }();
  return spec;
}

}  // namespace compactor
