// Mixed precision: per-module quantization overrides by name pattern ("PATTERN=VALUE", from
// `--override` or a recipe's `override:` list; the last matching rule wins).
//   PATTERN  a Hugging Face module name with globs: `*` any run of characters, `?` one character,
//            `{A-B}` an integer in [A, B] (e.g. `model.layers.{0-3}.mlp.down_proj`, `*.o_proj`, `lm_head`)
//   VALUE    `fp16` | `bf16` | `16` | `keep` (leave the module unquantized), or `w<B>` (per-channel),
//            `w<B>g<G>`, optionally followed by `-sym` / `-asym`; a bare bit width `<B>` keeps the
//            default group size and symmetry.
// Embeddings are never quantized; lm_head is kept unless a rule quantizes it.
// Test: build-comp/tests/test_quantizers_awq (tests/unit/test_quantizers_awq.cpp).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "formats/quant.h"

namespace compactor {

struct ModuleRule {
  std::string pattern;
  bool keep = false;          // leave in 16 bits
  int bits = 0;               // 0: the default's
  std::optional<int> group;   // unset: the default's; 0 = per-channel
  std::optional<bool> symmetric;
  std::string text;           // as given
};

Result<ModuleRule> parse_module_rule(const std::string& text);
bool module_pattern_matches(std::string_view pattern, std::string_view name);

// The spec of `module` under `rules` (nullopt: keep it unquantized). `default_keep`: modules that
// stay unquantized unless a rule names them (lm_head).
std::optional<QuantSpec> spec_for_module(const std::string& module, const QuantSpec& default_spec,
                                         const std::vector<ModuleRule>& rules, bool default_keep);

}  // namespace compactor
