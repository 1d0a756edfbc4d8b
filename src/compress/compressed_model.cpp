// Writes compressed model directories (layout in compressed_model.h) through AtomicDirectory.
// Test: build-*/tests/test_compressed_model.
#include "compress/compressed_model.h"

#include <set>
#include <system_error>

#include "core/version.h"
#include "formats/nf4.h"
#include "formats/quant_pack.h"
#include "io/safetensors.h"

namespace compactor {

namespace {

// Files of a model directory that describe its tokenizer and generation defaults.
constexpr const char* kCopiedFiles[] = {"tokenizer.json",         "tokenizer.model",  "tokenizer_config.json",
                                        "special_tokens_map.json", "added_tokens.json", "vocab.json",
                                        "merges.txt",              "generation_config.json", "chat_template.jinja"};

// One module to store packed: intN (`packed`) or NF4 (`nf4`, when is_nf4).
struct PackedModule {
  std::string name;
  PackedLinear packed;
  PackedNF4 nf4;
  bool is_nf4 = false;

  int64_t weights() const { return is_nf4 ? nf4.out_features * nf4.in_features : packed.out_features * packed.in_features; }
  ModuleQuantization spec() const {
    if (is_nf4) return ModuleQuantization{Format::kNF4, QuantSpec{4, nf4.block_size, false}, false};
    return ModuleQuantization{packed.format, packed.spec, packed.act_order()};
  }
};

// Shapes of the linears a quantized map may name: the model's linears, plus "lm_head" of a tied
// model (quantizing it stores lm_head.* packed and leaves the embeddings dense).
std::map<std::string, std::pair<int64_t, int64_t>> quantizable_shapes(const Model& base) {
  std::map<std::string, std::pair<int64_t, int64_t>> shapes;
  for (const auto& [name, w] : base.named_linears()) shapes[name] = {w->out_features, w->in_features};
  const std::string& lm = base.arch().names.lm_head;
  shapes.emplace(lm.substr(0, lm.size() - 7), std::pair{base.config().vocab_size, base.config().hidden_size});
  return shapes;
}

Status check_module_shape(const std::map<std::string, std::pair<int64_t, int64_t>>& shapes, const std::string& name,
                          int64_t n, int64_t k) {
  auto it = shapes.find(name);
  if (it == shapes.end()) return invalid_argument("quantized module '{}' is not a linear of the model", name);
  if (n != it->second.first || k != it->second.second)
    return invalid_argument("quantized module '{}' is [{}, {}] but the model's linear is [{}, {}]", name, n, k,
                            it->second.first, it->second.second);
  return Status::ok();
}

Result<std::vector<PackedModule>> pack_modules(const Model& base,
                                               const std::map<std::string, QuantizedLinear>& quantized,
                                               const std::map<std::string, NF4Linear>& nf4) {
  const auto shapes = quantizable_shapes(base);
  std::vector<PackedModule> out;
  for (const auto& [name, q] : quantized) {
    RETURN_IF_ERROR(check_module_shape(shapes, name, q.out_features, q.in_features));
    if (nf4.count(name)) return invalid_argument("module '{}' is given both as intN and as nf4", name);
    auto packed = pack_linear(q);
    if (!packed.is_ok()) return packed.status().with_context("quantized module '" + name + "'");
    out.push_back({name, std::move(packed).value(), PackedNF4{}, false});
  }
  for (const auto& [name, q] : nf4) {
    RETURN_IF_ERROR(check_module_shape(shapes, name, q.out_features, q.in_features));
    auto packed = pack_nf4(q);
    if (!packed.is_ok()) return packed.status().with_context("nf4 module '" + name + "'");
    out.push_back({name, PackedLinear{}, std::move(packed).value(), true});
  }
  return out;
}

// The base's tensors minus the (dense or packed) weights of re-quantized modules, plus the packed
// tensors.
std::vector<NamedView> output_tensors(const Model& base, const std::vector<PackedModule>& modules) {
  std::set<std::string> replaced;
  for (const auto& m : modules)
    for (const char* suffix : {".weight", ".qweight", ".scales", ".qzeros", ".g_idx", ".nested_scales", ".nested_offset"})
      replaced.insert(m.name + suffix);
  std::vector<NamedView> tensors;
  for (const std::string& name : base.files().names())
    if (!replaced.count(name)) tensors.push_back({name, base.files().find(name)->view()});
  for (const auto& m : modules) {
    if (m.is_nf4) {
      tensors.push_back({m.name + ".qweight", m.nf4.qweight.view()});
      tensors.push_back({m.name + ".scales", m.nf4.scales.view()});
      tensors.push_back({m.name + ".nested_scales", m.nf4.nested_scales.view()});
      tensors.push_back({m.name + ".nested_offset", m.nf4.nested_offset.view()});
      continue;
    }
    tensors.push_back({m.name + ".qweight", m.packed.qweight.view()});
    tensors.push_back({m.name + ".scales", m.packed.scales.view()});
    tensors.push_back({m.name + ".qzeros", m.packed.qzeros.view()});
    if (m.packed.act_order()) tensors.push_back({m.name + ".g_idx", m.packed.g_idx.view()});
  }
  return tensors;
}

// [N, K] of every module stored packed in the output: the new ones and those a compressed base
// already had.
std::map<std::string, int64_t> packed_weights(const Model& base, const std::vector<PackedModule>& modules) {
  std::map<std::string, int64_t> out;
  for (const auto& [name, w] : base.named_linears())
    if (w->quantized()) out[name] = w->out_features * w->in_features;
  for (const auto& m : modules) out[m.name] = m.weights();
  return out;
}

// Bits per weight of the written tensors (the same accounting as Model::weight_bits).
nlohmann::json weights_json(const std::vector<NamedView>& tensors, const std::map<std::string, int64_t>& packed) {
  WeightBits b;
  for (const auto& t : tensors) {
    b.bytes += t.view.bytes();
    const size_t dot = t.name.rfind('.');
    if (dot != std::string::npos && t.name.substr(dot) != ".weight" && t.name.substr(dot) != ".bias" &&
        packed.count(t.name.substr(0, dot))) {
      b.quantized_bytes += t.view.bytes();
    } else {
      b.params += t.view.numel();
    }
  }
  for (const auto& [name, nk] : packed) {
    b.params += nk;
    b.quantized_params += nk;
  }
  return {{"parameters", b.params},
          {"bytes", b.bytes},
          {"bits_per_weight", b.bits_per_weight()},
          {"quantized_parameters", b.quantized_params},
          {"quantized_bytes", b.quantized_bytes},
          {"quantized_bits_per_weight", b.quantized_bits_per_weight()}};
}

nlohmann::json config_json(const Model& base, const std::vector<PackedModule>& modules) {
  std::map<std::string, ModuleQuantization> specs;
  if (base.quantization() != nullptr) specs = base.quantization()->modules;  // a compressed base keeps its modules
  for (const auto& m : modules) specs[m.name] = m.spec();
  nlohmann::json config = base.config().raw;
  config.erase("quantization_config");
  if (!specs.empty()) config["quantization_config"] = quantization_config_json(make_quantization_config(specs));
  return config;
}

Status copy_side_files(const std::filesystem::path& from, const std::filesystem::path& to) {
  for (const char* name : kCopiedFiles) {
    const std::filesystem::path src = from / name;
    if (!std::filesystem::exists(src)) continue;
    std::error_code ec;
    std::filesystem::copy_file(src, to / name, ec);
    if (ec) return io_error("copying {} to {}: {}", src.string(), (to / name).string(), ec.message());
  }
  return Status::ok();
}

}  // namespace

std::vector<std::string> linear_module_names(const Model& model) {
  std::vector<std::string> names;
  for (const auto& [name, w] : model.named_linears()) names.push_back(name);
  return names;
}

Status save_compressed_model(const Model& base, const std::map<std::string, QuantizedLinear>& quantized,
                             const nlohmann::json& provenance, const std::filesystem::path& out, Overwrite overwrite) {
  return save_compressed_model(base, quantized, {}, provenance, out, overwrite);
}

Status save_compressed_model(const Model& base, const std::map<std::string, QuantizedLinear>& quantized,
                             const std::map<std::string, NF4Linear>& nf4, const nlohmann::json& provenance,
                             const std::filesystem::path& out, Overwrite overwrite) {
  if (!base.has_files()) return invalid_argument("save_compressed_model: the base model has no files to copy");
  ASSIGN_OR_RETURN(std::vector<PackedModule> modules, pack_modules(base, quantized, nf4));
  ASSIGN_OR_RETURN(AtomicDirectory dir, AtomicDirectory::create(out, overwrite));
  const std::vector<NamedView> tensors = output_tensors(base, modules);
  RETURN_IF_ERROR(write_safetensors(dir.path() / "model.safetensors", tensors, {{"format", "pt"}, {"compactor", "1"}}));
  std::string config_text, record_text;
  try {  // dump() throws on invalid UTF-8 in caller-provided strings
    config_text = config_json(base, modules).dump(2) + "\n";
    const nlohmann::json record = {{"compactor_version", std::string(tool_version())},
                                   {"git_commit", std::string(git_commit())},
                                   {"base_model", base.dir().string()},
                                   {"weights", weights_json(tensors, packed_weights(base, modules))},
                                   {"provenance", provenance}};
    record_text = record.dump(2) + "\n";
  } catch (const nlohmann::json::exception& e) {
    return invalid_argument("save_compressed_model: config/provenance JSON for {}: {}", out.string(), e.what());
  }
  RETURN_IF_ERROR(write_file_atomic(dir.path() / "config.json", config_text));
  RETURN_IF_ERROR(copy_side_files(base.dir(), dir.path()));
  RETURN_IF_ERROR(write_file_atomic(dir.path() / "compactor.json", record_text));
  return dir.commit();
}

}  // namespace compactor
