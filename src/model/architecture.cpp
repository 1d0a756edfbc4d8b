#include "model/architecture.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace compactor {

namespace {
const std::vector<const ArchitectureSpec*>& registry() {
  static const std::vector<const ArchitectureSpec*> specs = {&llama_architecture(), &mistral_architecture(),
                                                             &qwen2_architecture()};
  return specs;
}
}  // namespace

Result<const ArchitectureSpec*> find_architecture(const ModelConfig& cfg) {
  for (const ArchitectureSpec* spec : registry())
    if (spec->hf_name == cfg.architecture) return spec;
  return unsupported("architecture '{}' is not supported (supported: {})", cfg.architecture,
                     fmt::join(supported_architectures(), ", "));
}

std::vector<std::string> supported_architectures() {
  std::vector<std::string> names;
  for (const ArchitectureSpec* spec : registry()) names.push_back(spec->hf_name);
  return names;
}

std::string layer_tensor_name(const std::string& pattern, int layer) {
  return fmt::format(fmt::runtime(pattern), layer);
}

}  // namespace compactor
