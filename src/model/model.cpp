// Model loading: config -> architecture spec -> weights bound by name, shapes checked against the
// config, placed on the backend (CPU: the memory-mapped views as stored; CUDA: device copies).
// Compressed directories: linears listed in quantization_config are bound from their packed
// tensors (formats/quant_pack.h), checked against the config and kept packed on every backend.
#include "model/model.h"

#include <cmath>
#include <numbers>

#include "formats/nf4.h"
#include "formats/quant_pack.h"

namespace compactor {

namespace {
constexpr const char* kLinearNames[] = {"q", "k", "v", "o", "gate", "up", "down"};
constexpr const char* kPackedSuffixes[] = {".qweight", ".scales", ".qzeros", ".g_idx"};
constexpr const char* kNF4Suffixes[] = {".qweight", ".scales", ".nested_scales", ".nested_offset"};
// Every tensor a packed module of any format may store (weight accounting).
constexpr const char* kAllPackedSuffixes[] = {".qweight", ".scales", ".qzeros", ".g_idx", ".nested_scales",
                                              ".nested_offset"};

// g_idx entries index scales/zeros in the kernels: out-of-range values would read past them.
Status check_g_idx(const std::string& module, View g_idx, int64_t groups) {
  const auto* g = g_idx.as<const int32_t>();
  for (int64_t k = 0; k < g_idx.numel(); ++k)
    if (g[k] < 0 || g[k] >= groups)
      return corrupt("tensor '{}.g_idx' entry {} is {}, outside [0, {})", module, k, g[k], groups);
  return Status::ok();
}
}  // namespace

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
  ASSIGN_OR_RETURN(m->quant_, parse_quantization_config(m->config_.raw, (dir / "config.json").string()));
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

// A packed tensor as stored: the mapping on the CPU, a same-dtype copy elsewhere.
Result<View> Model::place_raw(const std::string& name) {
  const TensorEntry* entry = files_->find(name);
  if (entry == nullptr) return not_found("tensor '{}' is missing from the checkpoint", name);
  View host = entry->view();
  if (backend_->device() == Device::kCpu) return host;
  Tensor dev = backend_->alloc(host.shape, host.dtype);
  backend_->copy_from_host(host.data, dev);
  owned_.push_back(dev);
  return dev.view();
}

Result<LinearWeight> Model::place_packed(const std::string& base, const ModuleQuantization& q, int64_t out,
                                         int64_t in) {
  if (files_->find(base + ".weight") != nullptr)
    return corrupt("module '{}' is listed in quantization_config but also has a dense '{}.weight'", base, base);
  if (q.format == Format::kNF4) return place_nf4(base, q, out, in);
  const bool has_g_idx = files_->find(base + ".g_idx") != nullptr;
  if (has_g_idx != q.act_order)
    return corrupt("module '{}': quantization_config says desc_act {} but '{}.g_idx' is {}", base, q.act_order, base,
                   has_g_idx ? "present" : "absent");
  for (const char* suffix : kPackedSuffixes)
    if (files_->find(base + suffix) == nullptr && std::string_view(suffix) != ".g_idx")
      return not_found("tensor '{}{}' is missing (module '{}' is quantized in quantization_config)", base, suffix, base);
  View host_g_idx = has_g_idx ? files_->find(base + ".g_idx")->view() : View{};
  RETURN_IF_ERROR(check_packed_shapes(base, q.spec.bits, q.spec.group_size, out, in,
                                      files_->find(base + ".qweight")->view(), files_->find(base + ".scales")->view(),
                                      files_->find(base + ".qzeros")->view(), host_g_idx));
  if (has_g_idx) RETURN_IF_ERROR(check_g_idx(base, host_g_idx, quant_groups(q.spec.group_size, in)));
  LinearWeight w;
  w.format = q.format;
  w.out_features = out;
  w.in_features = in;
  w.group_size = q.spec.group_size;
  ASSIGN_OR_RETURN(w.qweight, place_raw(base + ".qweight"));
  ASSIGN_OR_RETURN(w.scales, place_raw(base + ".scales"));
  ASSIGN_OR_RETURN(w.qzeros, place_raw(base + ".qzeros"));
  if (has_g_idx) {
    ASSIGN_OR_RETURN(w.g_idx, place_raw(base + ".g_idx"));
  }
  return w;
}

Result<LinearWeight> Model::place_nf4(const std::string& base, const ModuleQuantization& q, int64_t out,
                                      int64_t in) {
  for (const char* suffix : {".qzeros", ".g_idx"})
    if (files_->find(base + suffix) != nullptr)
      return corrupt("module '{}' is nf4 in quantization_config but has an intN tensor '{}{}'", base, base, suffix);
  View host[4];
  for (int i = 0; i < 4; ++i) {
    const TensorEntry* e = files_->find(base + kNF4Suffixes[i]);
    if (e == nullptr)
      return not_found("tensor '{}{}' is missing (module '{}' is nf4 in quantization_config)", base, kNF4Suffixes[i],
                       base);
    host[i] = e->view();
  }
  RETURN_IF_ERROR(check_nf4_shapes(base, q.spec.group_size, out, in, host[0], host[1], host[2], host[3]));
  LinearWeight w;
  w.format = Format::kNF4;
  w.out_features = out;
  w.in_features = in;
  w.group_size = q.spec.group_size;
  ASSIGN_OR_RETURN(w.qweight, place_raw(base + ".qweight"));
  ASSIGN_OR_RETURN(w.scales, place_raw(base + ".scales"));
  ASSIGN_OR_RETURN(w.nested_scales, place_raw(base + ".nested_scales"));
  ASSIGN_OR_RETURN(w.nested_offset, place_raw(base + ".nested_offset"));
  return w;
}

Result<LinearWeight> Model::place_linear(const std::string& base, int64_t out, int64_t in, bool has_bias) {
  LinearWeight w;
  const ModuleQuantization* q = quant_ ? quant_->find(base) : nullptr;
  if (q != nullptr) {
    ASSIGN_OR_RETURN(w, place_packed(base, *q, out, in));
  } else if (files_->find(base + ".qweight") != nullptr) {
    return corrupt("tensor '{}.qweight' exists but module '{}' is not listed in config.json's quantization_config",
                   base, base);
  } else {
    w.out_features = out;
    w.in_features = in;
    ASSIGN_OR_RETURN(w.weight, place(base + ".weight", Shape{out, in}, false));
    format_from_dtype(w.weight.dtype, &w.format);
  }
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
  const std::string lm_head = n.lm_head.substr(0, n.lm_head.size() - 7);  // without ".weight"
  const bool tied = c.tie_word_embeddings && files_->find(n.lm_head) == nullptr &&
                    files_->find(lm_head + ".qweight") == nullptr;
  if (tied) {
    weights_.lm_head = LinearWeight{};
    weights_.lm_head.out_features = c.vocab_size;
    weights_.lm_head.in_features = d;
    weights_.lm_head.weight = weights_.embed;
    format_from_dtype(weights_.embed.dtype, &weights_.lm_head.format);
  } else {
    ASSIGN_OR_RETURN(weights_.lm_head, place_linear(lm_head, c.vocab_size, d, false));
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
    if (w.lm_head.weight.data != w.embed.data)
      total += w.lm_head.weight.numel() + (w.lm_head.bias.data ? w.lm_head.bias.numel() : 0);
    for (const LayerWeights& lw : w.layers) {
      total += lw.attn_norm.numel() + lw.mlp_norm.numel();
      for (const LinearWeight* l : {&lw.q, &lw.k, &lw.v, &lw.o, &lw.gate, &lw.up, &lw.down})
        total += l->out_features * l->in_features + (l->bias.data ? l->bias.numel() : 0);
    }
    return total;
  }
  return weight_bits().params;
}

std::vector<std::pair<std::string, const LinearWeight*>> Model::named_linears() const {
  std::vector<std::pair<std::string, const LinearWeight*>> out;
  const TensorNames& n = arch_->names;
  const std::string* patterns[] = {&n.q, &n.k, &n.v, &n.o, &n.gate, &n.up, &n.down};
  for (int l = 0; l < static_cast<int>(weights_.layers.size()); ++l) {
    LayerWeights& lw = const_cast<LayerWeights&>(weights_.layers[l]);  // linear() has no const overload
    for (int i = 0; i < 7; ++i) out.emplace_back(layer_tensor_name(*patterns[i], l), lw.linear(kLinearNames[i]));
  }
  const bool tied = weights_.lm_head.weight.data != nullptr && weights_.lm_head.weight.data == weights_.embed.data;
  if (!tied) out.emplace_back(n.lm_head.substr(0, n.lm_head.size() - 7), &weights_.lm_head);
  return out;
}

// Packed linears count as the [N, K] weights they hold; every other tensor by its elements.
WeightBits Model::weight_bits() const {
  WeightBits b;
  if (files_ == nullptr) {
    b.params = parameter_count();
    return b;
  }
  for (const std::string& name : files_->names()) {
    const View v = files_->find(name)->view();
    b.bytes += v.bytes();
    b.params += v.numel();
  }
  for (const auto& [name, w] : named_linears()) {
    if (!w->quantized()) continue;
    for (const char* suffix : kAllPackedSuffixes) {
      const TensorEntry* e = files_->find(name + suffix);
      if (e == nullptr) continue;
      b.params -= e->view().numel();
      b.quantized_bytes += e->view().bytes();
    }
    b.params += w->out_features * w->in_features;
    b.quantized_params += w->out_features * w->in_features;
  }
  return b;
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
