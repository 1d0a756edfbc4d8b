// Model loading: config -> architecture spec -> weights bound by name, shapes checked against the
// config, placed on the backend (CPU: the memory-mapped views as stored; CUDA: device copies).
#include "model/model.h"

#include <cmath>
#include <numbers>

namespace compactor {

namespace {
constexpr const char* kLinearNames[] = {"q", "k", "v", "o", "gate", "up", "down"};
}

LinearWeight* LayerWeights::linear(std::string_view n) {
  if (n == "q") return &q;
  if (n == "k") return &k;
  if (n == "v") return &v;
  if (n == "o") return &o;
  if (n == "gate") return &gate;
  if (n == "up") return &up;
  if (n == "down") return &down;
  return nullptr;
}

Result<std::unique_ptr<Model>> Model::load(const std::filesystem::path& dir, Backend& backend) {
  std::unique_ptr<Model> m(new Model());
  m->dir_ = dir;
  m->backend_ = &backend;
  ASSIGN_OR_RETURN(m->config_, load_model_config(dir));
  ASSIGN_OR_RETURN(m->arch_, find_architecture(m->config_));
  ASSIGN_OR_RETURN(WeightFiles files, WeightFiles::open(dir));
  m->files_ = std::make_shared<WeightFiles>(std::move(files));
  RETURN_IF_ERROR(m->bind_weights().with_context(dir.string()));
  m->inv_freq_ = rope_inv_freq(m->config_);
  return m;
}

// Places one tensor on the backend after checking its shape. Norm weights go to the device in f32
// (tiny, and they scale every activation); other tensors keep their dtype on the CPU and take the
// activation dtype on accelerators.
Result<View> Model::place(const std::string& name, Shape expected, bool is_norm) {
  const TensorEntry* entry = files_->find(name);
  if (entry == nullptr) return not_found("tensor '{}' is missing from the checkpoint", name);
  View host = entry->view();
  if (!(host.shape == expected))
    return invalid_argument("tensor '{}' has shape {} but config.json implies {}", name, host.shape.str(), expected.str());
  Format fmt;
  if (!format_from_dtype(host.dtype, &fmt))
    return unsupported("tensor '{}' has dtype {}; expected f32, f16 or bf16", name, dtype_name(host.dtype));
  if (backend_->device() == Device::kCpu) return host;
  DType target = is_norm ? DType::kF32 : backend_->activation_dtype();
  Tensor dev = backend_->alloc(expected, target);
  if (host.dtype == target) {
    backend_->copy_from_host(host.data, dev);
  } else {
    std::vector<float> f32(host.numel());
    convert_to_f32(host.data, host.dtype, host.numel(), f32.data());
    std::vector<uint8_t> converted(dev.bytes());
    convert_from_f32(f32.data(), host.numel(), target, converted.data());
    backend_->copy_from_host(converted.data(), dev);
  }
  owned_.push_back(dev);
  return dev.view();
}

Result<LinearWeight> Model::place_linear(const std::string& base, int64_t out, int64_t in, bool has_bias) {
  LinearWeight w;
  w.out_features = out;
  w.in_features = in;
  ASSIGN_OR_RETURN(w.weight, place(base + ".weight", Shape{out, in}, false));
  format_from_dtype(w.weight.dtype, &w.format);
  if (has_bias) {
    ASSIGN_OR_RETURN(w.bias, place(base + ".bias", Shape{out}, true));
  }
  return w;
}

Status Model::bind_weights() {
  const ModelConfig& c = config_;
  const TensorNames& n = arch_->names;
  const int64_t d = c.hidden_size, f = c.intermediate_size, dh = c.head_dim;
  const int64_t q_out = c.num_heads * dh, kv_out = c.num_kv_heads * dh;
  ASSIGN_OR_RETURN(weights_.embed, place(n.embed, Shape{c.vocab_size, d}, false));
  ASSIGN_OR_RETURN(weights_.final_norm, place(n.final_norm, Shape{d}, true));
  const bool tied = c.tie_word_embeddings && files_->find(n.lm_head) == nullptr;
  if (tied) {
    weights_.lm_head = LinearWeight{Format::kF32, c.vocab_size, d, weights_.embed, {}};
    format_from_dtype(weights_.embed.dtype, &weights_.lm_head.format);
  } else {
    ASSIGN_OR_RETURN(weights_.lm_head, place_linear(n.lm_head.substr(0, n.lm_head.size() - 7), c.vocab_size, d, false));
  }
  const std::pair<int64_t, int64_t> dims[] = {{q_out, d}, {kv_out, d}, {kv_out, d}, {d, q_out},
                                              {f, d},     {f, d},      {d, f}};
  const std::string* patterns[] = {&n.q, &n.k, &n.v, &n.o, &n.gate, &n.up, &n.down};
  weights_.layers.resize(c.num_layers);
  for (int l = 0; l < c.num_layers; ++l) {
    LayerWeights& lw = weights_.layers[l];
    ASSIGN_OR_RETURN(lw.attn_norm, place(layer_tensor_name(n.attn_norm, l), Shape{d}, true));
    ASSIGN_OR_RETURN(lw.mlp_norm, place(layer_tensor_name(n.mlp_norm, l), Shape{d}, true));
    for (int i = 0; i < 7; ++i) {
      bool bias = arch_->has_bias(c, kLinearNames[i]);
      ASSIGN_OR_RETURN(*lw.linear(kLinearNames[i]),
                       place_linear(layer_tensor_name(*patterns[i], l), dims[i].first, dims[i].second, bias));
    }
  }
  return Status::ok();
}

int64_t Model::parameter_count() const {
  int64_t total = 0;
  if (files_ == nullptr) {  // allocated (synthetic) model: count what is placed
    const ModelWeights& w = weights_;
    total = w.embed.numel() + w.final_norm.numel();
    if (w.lm_head.weight.data != w.embed.data) total += w.lm_head.weight.numel() + w.lm_head.bias.numel();
    for (const LayerWeights& lw : w.layers) {
      total += lw.attn_norm.numel() + lw.mlp_norm.numel();
      for (const LinearWeight* l : {&lw.q, &lw.k, &lw.v, &lw.o, &lw.gate, &lw.up, &lw.down})
        total += l->weight.numel() + (l->bias.data ? l->bias.numel() : 0);
    }
    return total;
  }
  for (const std::string& name : files_->names()) total += files_->find(name)->view().numel();
  return total;
}

KvCache Model::make_kv_cache(int batch, int max_tokens) const {
  KvCache cache;
  cache.batch = batch;
  cache.capacity = max_tokens;
  cache.lengths.assign(batch, 0);
  const int64_t kv_dim = config_.num_kv_heads * config_.head_dim;
  for (int l = 0; l < config_.num_layers; ++l) {
    cache.k.push_back(backend_->alloc(Shape{batch, max_tokens, kv_dim}, backend_->activation_dtype()));
    cache.v.push_back(backend_->alloc(Shape{batch, max_tokens, kv_dim}, backend_->activation_dtype()));
  }
  return cache;
}

// Llama-3 "llama3" rope scaling (transformers' _compute_llama3_parameters): long wavelengths are
// divided by `factor`, short ones kept, and the band between is interpolated smoothly.
std::vector<float> rope_inv_freq(const ModelConfig& cfg) {
  const int64_t half = cfg.head_dim / 2;
  std::vector<float> inv(half);
  const RopeScaling& rs = cfg.rope_scaling;
  for (int64_t i = 0; i < half; ++i) {
    double freq = 1.0 / std::pow(cfg.rope_theta, static_cast<double>(2 * i) / static_cast<double>(cfg.head_dim));
    if (rs.type == RopeType::kLinear) {
      freq /= rs.factor;
    } else if (rs.type == RopeType::kLlama3) {
      const double low_wavelen = rs.original_max_position_embeddings / rs.low_freq_factor;
      const double high_wavelen = rs.original_max_position_embeddings / rs.high_freq_factor;
      const double wavelen = 2 * std::numbers::pi / freq;
      if (wavelen > low_wavelen) {
        freq /= rs.factor;
      } else if (wavelen >= high_wavelen) {
        double smooth = (rs.original_max_position_embeddings / wavelen - rs.low_freq_factor) /
                        (rs.high_freq_factor - rs.low_freq_factor);
        freq = (1 - smooth) * freq / rs.factor + smooth * freq;
      }
    }
    inv[i] = static_cast<float>(freq);
  }
  return inv;
}

}  // namespace compactor
