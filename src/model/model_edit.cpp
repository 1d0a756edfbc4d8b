// Weight replacement: compressors hand the model new dense weights (dequantized linears, norms with
// folded AWQ/SmoothQuant scales). The model owns the new storage, on its backend, and never learns
// which compressor produced it. Test: build-*/tests/test_ptq_driver (tests/models/test_ptq_driver.cpp).
#include "model/model.h"

namespace compactor {

// CPU: the f32 host tensor itself. Accelerators: a device copy in f32 (norms) or the activation dtype.
Result<View> Model::own_on_backend(Tensor host_f32, bool is_norm) {
  if (host_f32.dtype() != DType::kF32 || host_f32.device() != Device::kCpu)
    return invalid_argument("replacement weight must be f32 on the host, got {} on {}", dtype_name(host_f32.dtype()),
                            device_name(host_f32.device()));
  if (backend_->device() == Device::kCpu) {
    owned_.push_back(host_f32);
    return host_f32.view();
  }
  const DType target = is_norm ? DType::kF32 : backend_->activation_dtype();
  Tensor dev = backend_->alloc(host_f32.shape(), target);
  std::vector<uint8_t> converted(dev.bytes());
  convert_from_f32(host_f32.as<float>(), host_f32.numel(), target, converted.data());
  backend_->copy_from_host(converted.data(), dev);
  owned_.push_back(dev);
  return dev.view();
}

Status Model::replace_linear(int layer, std::string_view name, Tensor weight) {
  LinearWeight* w = nullptr;
  if (layer == -1 && name == "lm_head") {
    w = &weights_.lm_head;
  } else if (layer >= 0 && layer < config_.num_layers) {
    w = weights_.layers[layer].linear(name);
  }
  if (w == nullptr)
    return invalid_argument("replace_linear: no linear '{}' in layer {} (q, k, v, o, gate, up, down; lm_head with -1)",
                            name, layer);
  if (!(weight.shape() == Shape{w->out_features, w->in_features}))
    return invalid_argument("replace_linear: layer {} '{}' expects [{}, {}], got {}", layer, name, w->out_features,
                            w->in_features, weight.shape().str());
  ASSIGN_OR_RETURN(View placed, own_on_backend(std::move(weight), false));
  LinearWeight replaced;
  replaced.out_features = w->out_features;
  replaced.in_features = w->in_features;
  replaced.bias = w->bias;
  replaced.weight = placed;
  format_from_dtype(placed.dtype, &replaced.format);
  *w = replaced;
  return Status::ok();
}

Status Model::replace_norm(int layer, std::string_view name, Tensor weight) {
  View* target = nullptr;
  if (layer == -1 && name == "final_norm") {
    target = &weights_.final_norm;
  } else if (layer >= 0 && layer < config_.num_layers) {
    if (name == "attn_norm") target = &weights_.layers[layer].attn_norm;
    if (name == "mlp_norm") target = &weights_.layers[layer].mlp_norm;
  }
  if (target == nullptr)
    return invalid_argument("replace_norm: no norm '{}' in layer {} (attn_norm, mlp_norm; final_norm with -1)", name,
                            layer);
  if (!(weight.shape() == Shape{config_.hidden_size}))
    return invalid_argument("replace_norm: layer {} '{}' expects [{}], got {}", layer, name, config_.hidden_size,
                            weight.shape().str());
  ASSIGN_OR_RETURN(*target, own_on_backend(std::move(weight), true));
  return Status::ok();
}

}  // namespace compactor
