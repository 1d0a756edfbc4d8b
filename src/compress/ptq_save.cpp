#include "compress/ptq_save.h"

#include <map>
#include <set>

#include "compress/compressed_model.h"
#include "io/safetensors.h"

namespace compactor {

namespace {

// HF tensor name -> the model's current dense view, for every tensor a compressor may change.
std::map<std::string, View> current_dense_views(const Model& model) {
  std::map<std::string, View> views;
  const TensorNames& n = model.arch().names;
  auto& layers = const_cast<Model&>(model).mutable_weights().layers;
  for (int l = 0; l < model.config().num_layers; ++l) {
    views[layer_tensor_name(n.attn_norm, l)] = layers[l].attn_norm;
    views[layer_tensor_name(n.mlp_norm, l)] = layers[l].mlp_norm;
    for (const char* name : {"q", "k", "v", "o", "gate", "up", "down"})
      views[linear_module_name(model, l, name) + ".weight"] = layers[l].linear(name)->weight;
  }
  views[n.final_norm] = model.weights().final_norm;
  return views;
}

// Rewrites staged/model.safetensors into dest with `names` taken from the model (f32).
Status write_with_overrides(const Model& model, const std::vector<std::string>& names,
                            const std::filesystem::path& staged, const std::filesystem::path& dest) {
  ASSIGN_OR_RETURN(auto file, SafetensorsFile::open(staged));
  const auto views = current_dense_views(model);
  std::map<std::string, Tensor> replaced;
  for (const std::string& name : names) {
    auto it = views.find(name);
    if (it == views.end()) return invalid_argument("save: modified tensor '{}' is not a dense tensor of the model", name);
    Tensor t = Tensor::empty(it->second.shape, DType::kF32);
    copy_to_host_f32(model.backend(), it->second, t.as<float>());
    replaced[name] = t;
  }
  std::vector<NamedView> tensors;
  for (const std::string& name : file->tensor_names()) {
    auto it = replaced.find(name);
    tensors.push_back({name, it != replaced.end() ? it->second.view() : file->find(name)->view()});
  }
  return write_safetensors(dest, tensors, file->metadata());
}

}  // namespace

Status save_quantized_model(const Model& model, const PtqResult& result, const nlohmann::json& provenance,
                            const std::filesystem::path& out, Overwrite overwrite) {
  if (result.modified_dense.empty()) return save_compressed_model(model, result.quantized, provenance, out, overwrite);
  ASSIGN_OR_RETURN(AtomicDirectory dir, AtomicDirectory::create(out, overwrite));
  const std::filesystem::path staged = dir.path() / "staged";
  RETURN_IF_ERROR(save_compressed_model(model, result.quantized, provenance, staged));
  const std::set<std::string> unique(result.modified_dense.begin(), result.modified_dense.end());
  RETURN_IF_ERROR(write_with_overrides(model, {unique.begin(), unique.end()}, staged / "model.safetensors",
                                       dir.path() / "model.safetensors"));
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(staged)) {
    if (entry.path().filename() == "model.safetensors") continue;
    std::filesystem::rename(entry.path(), dir.path() / entry.path().filename(), ec);
    if (ec) return io_error("save: moving {} into {}: {}", entry.path().string(), dir.path().string(), ec.message());
  }
  std::filesystem::remove_all(staged, ec);
  return dir.commit();
}

}  // namespace compactor
