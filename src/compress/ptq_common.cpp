// Helpers shared by the PTQ block compressors (ptq_internal.h).
#include <cstring>

#include "compress/ptq_internal.h"
#include "compress/quant_grid.h"

namespace compactor::ptq_detail {

std::string input_tap(const std::string& name) {
  if (name == "q" || name == "k" || name == "v") return "attn_norm";
  if (name == "o") return "attn_output";
  if (name == "gate" || name == "up") return "ffn_norm";
  if (name == "down") return "ffn_act";
  return "final_norm";
}

std::vector<float> read_linear(Model& model, const LinearWeight& w) {
  COMPACTOR_ASSERT(format_is_dense(w.format), "read_linear: the linear is stored as {}, not dense",
                   format_name(w.format));
  std::vector<float> out(w.out_features * w.in_features);
  copy_to_host_f32(model.backend(), w.weight, out.data());
  return out;
}

std::vector<float> read_vector(Model& model, View v) {
  std::vector<float> out(v.numel());
  copy_to_host_f32(model.backend(), v, out.data());
  return out;
}

Status replace_linear_f32(Model& model, int layer, const std::string& name, const std::vector<float>& w) {
  const LinearWeight& lw = layer < 0 ? model.weights().lm_head : *model.mutable_weights().layers[layer].linear(name);
  Tensor t = Tensor::empty(Shape{lw.out_features, lw.in_features}, DType::kF32);
  std::memcpy(t.data(), w.data(), w.size() * sizeof(float));
  return model.replace_linear(layer, name, std::move(t));
}

Status replace_norm_f32(Model& model, int layer, const std::string& name, const std::vector<float>& w) {
  Tensor t = Tensor::empty(Shape{static_cast<int64_t>(w.size())}, DType::kF32);
  std::memcpy(t.data(), w.data(), w.size() * sizeof(float));
  return model.replace_norm(layer, name, std::move(t));
}

Result<std::optional<QuantSpec>> linear_spec(const Model& model, const PtqOptions& o, int layer,
                                             const std::string& name) {
  const std::string module = linear_module_name(model, layer, name);
  std::optional<QuantSpec> spec = spec_for_module(module, o.spec, o.rules, layer < 0);
  if (spec) {
    const LinearWeight& lw =
        layer < 0 ? model.weights().lm_head : *const_cast<Model&>(model).mutable_weights().layers[layer].linear(name);
    RETURN_IF_ERROR(check_quant_spec(*spec, lw.in_features, module));
    if (!format_is_dense(lw.format))
      return invalid_argument("{} is already quantized ({}); quantize the original model", module,
                              format_name(lw.format));
  }
  return spec;
}

LinearReport make_report(const Model& model, int layer, const std::string& name, const QuantSpec& spec, bool act_order) {
  const LinearWeight& lw =
      layer < 0 ? model.weights().lm_head : *const_cast<Model&>(model).mutable_weights().layers[layer].linear(name);
  LinearReport r;
  r.module = linear_module_name(model, layer, name);
  r.layer = layer;
  r.linear = name;
  r.spec = spec;
  r.act_order = act_order;
  r.out_features = lw.out_features;
  r.in_features = lw.in_features;
  r.bits_per_weight = storage_bits_per_weight(spec, lw.out_features, lw.in_features, act_order);
  return r;
}

void record(PtqResult& r, LinearReport report, QuantizedLinear q) {
  const int64_t n = report.out_features * report.in_features;
  r.quantized_weights += n;
  r.quantized_bits += report.bits_per_weight * static_cast<double>(n);
  r.quantized[report.module] = std::move(q);
  r.linears.push_back(std::move(report));
}

void log_report(const LinearReport& r, bool quiet) {
  if (quiet) return;
  if (r.rel_error >= 0)
    std::fprintf(stderr, "quantize: %-40s w%dg%d  err %.3e  (rtn %.3e)  %.2f s\n", r.module.c_str(), r.spec.bits,
                 r.spec.group_size, r.rel_error, r.rtn_rel_error, r.seconds);
  else
    std::fprintf(stderr, "quantize: %-40s w%dg%d  %.2f s\n", r.module.c_str(), r.spec.bits, r.spec.group_size,
                 r.seconds);
}

}  // namespace compactor::ptq_detail
