// The `quantization_config` block of a compressed model directory's config.json (written by
// compress/compressed_model.h, read by Model::load): which linear modules are stored packed, in
// which format (formats/quant_pack.h), and the default spec.
//
//   "quantization_config": {
//     "quant_method": "compactor", "format_version": 1,
//     "packing": "gptq",          // GPTQ tensor names/shapes, little-endian bit streams
//     "zero_point": "true",       // qzeros hold z itself (AutoGPTQ v1 stores z - 1)
//     "format": "int4", "bits": 4, "group_size": 128, "sym": false, "desc_act": false,   // default
//     "modules": { "model.layers.0.self_attn.q_proj": {"format": "int4", "bits": 4,
//                   "group_size": 128, "sym": false, "desc_act": false}, ... }
//   }
// group_size -1 means per-channel (GPTQ's convention; QuantSpec uses 0). Every packed module is
// listed; modules not listed are stored dense under their original names.
// NF4 modules (formats/nf4.h): {"format": "nf4", "bits": 4, "group_size": <block, e.g. 64>,
// "sym": false, "desc_act": false}; their tensors are .qweight/.scales/.nested_scales/.nested_offset.
// Test: build-*/tests/test_compressed_model.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "core/status.h"
#include "formats/format.h"
#include "formats/quant.h"

namespace compactor {

struct ModuleQuantization {
  Format format = Format::kInt4;  // intN consistent with spec.bits, or kNF4 (spec {4, block, false})
  QuantSpec spec;
  bool act_order = false;  // desc_act: `.g_idx` is stored

  bool operator==(const ModuleQuantization&) const = default;
};

struct QuantizationConfig {
  ModuleQuantization default_module;                  // the most common module spec
  std::map<std::string, ModuleQuantization> modules;  // HF module name -> spec

  const ModuleQuantization* find(std::string_view module) const;
};

// Reads config["quantization_config"]; nullopt when absent. Errors name `source` and the key:
// another quant_method (GPTQ/AWQ checkpoints of other tools are not loadable yet), bits not in
// {2, 3, 4, 8}, a format that contradicts bits, a bad group size.
Result<std::optional<QuantizationConfig>> parse_quantization_config(const nlohmann::json& config,
                                                                    const std::string& source);

// The JSON block (inverse of parse_quantization_config).
nlohmann::json quantization_config_json(const QuantizationConfig& q);

// Builds the config of a set of module specs; the default is the most frequent spec.
QuantizationConfig make_quantization_config(const std::map<std::string, ModuleQuantization>& modules);

}  // namespace compactor
