// Writing a compressed model directory (DESIGN.md, "Output (compressed dir)"): an HF-style
// directory that Model::load reads like any other model.
//
//   config.json         the base config + "quantization_config" (model/quant_config.h)
//   model.safetensors   packed tensors `<module>.qweight/.scales/.qzeros[/.g_idx]` for every
//                       quantized module (layout: formats/quant_pack.h), or
//                       `<module>.qweight/.scales/.nested_scales/.nested_offset` for NF4 modules
//                       (formats/nf4.h), the base's tensors
//                       unchanged for everything else (norms, embeddings, unquantized linears,
//                       biases); metadata {"format": "pt", "compactor": "1"}
//   tokenizer files     copied from the base (tokenizer.json/.model, *_config.json, ...)
//   compactor.json      {"provenance": <caller's JSON: recipe, calibration hash, measurements>,
//                        "weights": <weight_bits of the result>, "compactor_version": ...}
// The directory is built through AtomicDirectory: an interrupted save leaves nothing at `out`.
// Test: build-*/tests/test_compressed_model.
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/status.h"
#include "formats/nf4.h"
#include "formats/quant.h"
#include "io/atomic_file.h"
#include "model/model.h"

namespace compactor {

// quantized: HF module name (e.g. "model.layers.0.self_attn.q_proj", "lm_head") -> its weight;
// each must name a linear of `base` with matching [N, K]. act-order is taken from g_idx being set.
// provenance: any JSON object, stored as compactor.json's "provenance".
Status save_compressed_model(const Model& base, const std::map<std::string, QuantizedLinear>& quantized,
                             const nlohmann::json& provenance, const std::filesystem::path& out,
                             Overwrite overwrite = Overwrite::kNo);

// The same with NF4 modules too (`nf4`: module name -> unpacked NF4 weight, double-quantized when
// packed); a module may be in only one of the two maps.
Status save_compressed_model(const Model& base, const std::map<std::string, QuantizedLinear>& quantized,
                             const std::map<std::string, NF4Linear>& nf4, const nlohmann::json& provenance,
                             const std::filesystem::path& out, Overwrite overwrite = Overwrite::kNo);

// The HF module names of a model's linears, in forward order ("model.layers.0.self_attn.q_proj",
// ..., "lm_head" unless tied): the keys save_compressed_model accepts.
std::vector<std::string> linear_module_names(const Model& model);

}  // namespace compactor
