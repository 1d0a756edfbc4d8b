// Synthetic models: HF config values of public checkpoints, Model::allocate (weights on the
// backend, no files; packed linears for quantized ones), and the random fill.
// Test: build-*/tests/test_synthetic_model (CPU), build-*/tests/test_cuda_synthetic_quant (GPU).
#include "model/synthetic.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <optional>
#include <random>

#include "formats/nf4.h"
#include "formats/quant_pack.h"

#include <nlohmann/json.hpp>

namespace compactor {

namespace {

using nlohmann::json;

// config.json of each checkpoint (the fields the forward uses; the rest take HF defaults).
json synthetic_json(std::string_view name) {
  if (name == "llama2-7b")
    return {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}, {"vocab_size", 32000},
            {"hidden_size", 4096}, {"intermediate_size", 11008}, {"num_hidden_layers", 32},
            {"num_attention_heads", 32}, {"num_key_value_heads", 32}, {"max_position_embeddings", 4096},
            {"rms_norm_eps", 1e-5}, {"rope_theta", 10000.0}, {"bos_token_id", 1}, {"eos_token_id", 2}};
  if (name == "llama3-8b")
    return {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}, {"vocab_size", 128256},
            {"hidden_size", 4096}, {"intermediate_size", 14336}, {"num_hidden_layers", 32},
            {"num_attention_heads", 32}, {"num_key_value_heads", 8}, {"max_position_embeddings", 8192},
            {"rms_norm_eps", 1e-5}, {"rope_theta", 500000.0}, {"bos_token_id", 128000}, {"eos_token_id", 128001}};
  if (name == "mistral-7b")
    return {{"architectures", {"MistralForCausalLM"}}, {"model_type", "mistral"}, {"vocab_size", 32000},
            {"hidden_size", 4096}, {"intermediate_size", 14336}, {"num_hidden_layers", 32},
            {"num_attention_heads", 32}, {"num_key_value_heads", 8}, {"max_position_embeddings", 32768},
            {"sliding_window", 4096}, {"rms_norm_eps", 1e-5}, {"rope_theta", 10000.0}, {"bos_token_id", 1},
            {"eos_token_id", 2}};
  if (name == "llama2-13b")
    return {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}, {"vocab_size", 32000},
            {"hidden_size", 5120}, {"intermediate_size", 13824}, {"num_hidden_layers", 40},
            {"num_attention_heads", 40}, {"num_key_value_heads", 40}, {"max_position_embeddings", 4096},
            {"rms_norm_eps", 1e-5}, {"rope_theta", 10000.0}, {"bos_token_id", 1}, {"eos_token_id", 2}};
  if (name == "tiny")
    return {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}, {"vocab_size", 512},
            {"hidden_size", 256}, {"intermediate_size", 688}, {"num_hidden_layers", 2},
            {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"max_position_embeddings", 1024},
            {"rms_norm_eps", 1e-5}, {"rope_theta", 10000.0}, {"bos_token_id", 1}, {"eos_token_id", 2}};
  return nullptr;
}

// SplitMix64: a counter-based generator, so element i of stream s is the same wherever it is drawn.
uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

constexpr float kLinearStd = 0.02f;

}  // namespace

std::vector<std::string> synthetic_model_names() { return {"llama2-7b", "llama3-8b", "mistral-7b", "llama2-13b", "tiny"}; }

Result<ModelConfig> synthetic_config(std::string_view name) {
  const json j = synthetic_json(name);
  if (j.is_null()) {
    std::string known;
    for (const std::string& n : synthetic_model_names()) known += (known.empty() ? "" : ", ") + n;
    return invalid_argument("--synthetic: unknown model '{}' (known: {})", name, known);
  }
  return parse_model_config(j, fmt::format("synthetic {}", name));
}

// Same shapes and dtypes as Model::load would place (norm weights f32, the rest in the backend's
// activation dtype), allocated but not initialised.
Result<std::unique_ptr<Model>> Model::allocate(const ModelConfig& config, Backend& backend,
                                               const QuantizationConfig* quant) {
  std::unique_ptr<Model> m(new Model());
  m->backend_ = &backend;
  m->config_ = config;
  if (quant != nullptr) m->quant_ = *quant;
  ASSIGN_OR_RETURN(m->arch_, find_architecture(config));
  const ModelConfig& c = m->config_;
  if (c.vocab_size <= 0 || c.hidden_size <= 0 || c.num_layers <= 0 || c.num_heads <= 0 || c.head_dim <= 0)
    return invalid_argument("Model::allocate: config has empty shapes");
  const DType act = backend.activation_dtype();
  auto tensor = [&](Shape s, DType d) {
    m->owned_.push_back(backend.alloc(s, d));
    return m->owned_.back().view();
  };
  // name: "q" .. "down" or "lm_head"; module: the HF module name quantization_config uses.
  auto linear = [&](std::string_view name, const std::string& module, int64_t out, int64_t in) {
    LinearWeight w;
    w.out_features = out;
    w.in_features = in;
    const ModuleQuantization* q = quant != nullptr ? quant->find(module) : nullptr;
    if (q != nullptr && q->format == Format::kNF4) {  // nf4.h shapes
      const int64_t blocks = quant_groups(q->spec.group_size, in);
      w.format = Format::kNF4;
      w.group_size = q->spec.group_size;
      w.qweight = tensor(Shape{packed_words(4, in), out}, DType::kI32);
      w.scales = tensor(Shape{blocks, out}, DType::kU8);
      w.nested_scales = tensor(Shape{(blocks * out + kNF4NestedBlock - 1) / kNF4NestedBlock}, DType::kF32);
      w.nested_offset = tensor(Shape{1}, DType::kF32);
    } else if (q != nullptr) {  // packed storage only (quant_pack.h shapes); no dense weight exists
      const int bits = q->spec.bits;
      const int64_t groups = quant_groups(q->spec.group_size, in);
      w.format = q->format;
      w.group_size = q->spec.group_size;
      w.qweight = tensor(Shape{packed_words(bits, in), out}, DType::kI32);
      w.scales = tensor(Shape{groups, out}, DType::kF16);
      w.qzeros = tensor(Shape{groups, packed_words(bits, out)}, DType::kI32);
      if (q->act_order) w.g_idx = tensor(Shape{in}, DType::kI32);
    } else {
      w.weight = tensor(Shape{out, in}, act);
      format_from_dtype(act, &w.format);
    }
    if (m->arch_->has_bias(c, name)) w.bias = tensor(Shape{out}, DType::kF32);
    return w;
  };
  const TensorNames& names = m->arch_->names;
  const int64_t d = c.hidden_size, f = c.intermediate_size, q_out = c.num_heads * c.head_dim;
  const int64_t kv_out = c.num_kv_heads * c.head_dim;
  m->weights_.embed = tensor(Shape{c.vocab_size, d}, act);
  m->weights_.final_norm = tensor(Shape{d}, DType::kF32);
  if (c.tie_word_embeddings) {
    LinearWeight& lm = m->weights_.lm_head;
    lm.out_features = c.vocab_size;
    lm.in_features = d;
    lm.weight = m->weights_.embed;
    format_from_dtype(act, &lm.format);
  } else {
    m->weights_.lm_head = linear("lm_head", names.lm_head.substr(0, names.lm_head.size() - 7), c.vocab_size, d);
  }
  m->weights_.layers.resize(c.num_layers);
  for (int l = 0; l < c.num_layers; ++l) {
    LayerWeights& lw = m->weights_.layers[l];
    auto module = [&](const std::string& pattern) { return layer_tensor_name(pattern, l); };
    lw.attn_norm = tensor(Shape{d}, DType::kF32);
    lw.mlp_norm = tensor(Shape{d}, DType::kF32);
    lw.q = linear("q", module(names.q), q_out, d);
    lw.k = linear("k", module(names.k), kv_out, d);
    lw.v = linear("v", module(names.v), kv_out, d);
    lw.o = linear("o", module(names.o), d, q_out);
    lw.gate = linear("gate", module(names.gate), f, d);
    lw.up = linear("up", module(names.up), f, d);
    lw.down = linear("down", module(names.down), d, f);
  }
  m->inv_freq_ = rope_inv_freq(m->config_);
  return m;
}

void fill_normal_host(Backend& backend, View out, uint64_t stream, float mean, float stddev) {
  std::vector<float> v(out.numel());
  const uint64_t key = mix64(stream);
  for (int64_t i = 0; i < out.numel(); ++i) {
    // Box-Muller on two 24-bit uniforms of one 64-bit draw; u1 in (0, 1] keeps log finite.
    const uint64_t r = mix64(key ^ static_cast<uint64_t>(i));
    const double u1 = (static_cast<double>(r >> 40) + 1.0) / 16777216.0;
    const double u2 = static_cast<double>((r >> 16) & 0xffffff) / 16777216.0;
    v[i] = mean + stddev * static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2));
  }
  std::vector<uint8_t> raw(out.bytes());
  convert_from_f32(v.data(), out.numel(), out.dtype, raw.data());
  backend.copy_from_host(raw.data(), out);
}

void fill_words_host(Backend& backend, View out, uint64_t stream) {
  COMPACTOR_ASSERT(dtype_size(out.dtype) == 4, "fill_words_host: {} is not a 4-byte dtype", dtype_name(out.dtype));
  std::vector<uint32_t> v(out.numel());
  const uint64_t key = mix64(stream);
  for (int64_t i = 0; i < out.numel(); ++i) v[i] = static_cast<uint32_t>(mix64(key ^ static_cast<uint64_t>(i)));
  backend.copy_from_host(v.data(), out);
}

namespace {

// Zero points are drawn uniformly from [2^(bits-1) - delta, 2^(bits-1) + delta - 1] (asymmetric;
// the mean is the middle of the code range, (2^bits - 1)/2, so weights have mean 0) or are exactly
// 2^(bits-1) (symmetric, the storage convention of quant_pack.h).
int zero_delta(int bits) { return std::max(1, (1 << bits) / 8); }

// Uploads the zero points of one packed linear: qzeros [G, packed_words(bits, N)] i32.
void fill_zeros(Backend& backend, const LinearWeight& w, bool symmetric, uint64_t stream) {
  const int bits = w.bits();
  const int64_t n = w.out_features, groups = w.qzeros.rows(), row_words = w.qzeros.cols();
  const uint32_t mid = 1u << (bits - 1);
  const uint32_t delta = static_cast<uint32_t>(zero_delta(bits));
  const uint64_t key = mix64(stream);
  std::vector<uint32_t> words(static_cast<size_t>(groups * row_words), 0u);
  for (int64_t g = 0; g < groups; ++g) {
    uint32_t* row = words.data() + g * row_words;
    for (int64_t i = 0; i < n; ++i) {
      const uint32_t z = symmetric ? mid : mid - delta + static_cast<uint32_t>(mix64(key ^ static_cast<uint64_t>(g * n + i)) % (2 * delta));
      const int64_t bit = i * bits;
      const int off = static_cast<int>(bit & 31);
      row[bit >> 5] |= z << off;
      if (off + bits > 32) row[(bit >> 5) + 1] |= z >> (32 - off);
    }
  }
  backend.copy_from_host(words.data(), w.qzeros);
}

// g_idx [K] i32 of act-order: a random permutation of the inputs cut into consecutive groups of
// group_size (GPTQ desc_act: every group has group_size members, the last one possibly fewer).
void fill_g_idx(Backend& backend, const LinearWeight& w, uint64_t stream) {
  const int64_t k = w.in_features;
  std::vector<int32_t> perm(k), g_idx(k);
  std::iota(perm.begin(), perm.end(), 0);
  std::mt19937_64 rng(mix64(stream));
  std::shuffle(perm.begin(), perm.end(), rng);
  for (int64_t j = 0; j < k; ++j) g_idx[perm[j]] = w.group_size == 0 ? 0 : static_cast<int32_t>(j / w.group_size);
  backend.copy_from_host(g_idx.data(), w.g_idx);
}

// Clears the padding bits of qweight's last word row (codes past K) as a packer would: random
// words fill them, and a checkpoint never holds anything there. Only when K * bits % 32 != 0.
void clear_code_padding(Backend& backend, const LinearWeight& w) {
  const int64_t used = (w.in_features * w.bits()) % 32;
  if (used == 0) return;
  const View last = w.qweight.row_slice(w.qweight.rows() - 1, 1);
  std::vector<uint32_t> row(last.numel());
  backend.copy_to_host(last, row.data());
  for (uint32_t& word : row) word &= (1u << used) - 1u;
  backend.copy_from_host(row.data(), last);
}

// NF4 scales: absmax' = e4m3(code) · nested_scale + offset with offset 0, nested_scale = a0 / 256
// and codes E4M3(±(256 + N(0, 25.6²))): |absmax'| ≈ a0 ± 10%, like the intN scales. The sign is
// random because uniform NF4 codes have mean 0.0235 (the levels are not symmetric): with one sign
// the weights would share a common-mode bias, which grows through the layers.
void fill_nf4_scales(Backend& backend, const LinearWeight& w, uint64_t stream) {
  double sq = 0;
  for (float v : kNF4Values) sq += double(v) * v;
  const float a0 = static_cast<float>(0.02 / std::sqrt(sq / 16.0));  // weight std 0.02 for uniform codes
  const int64_t count = w.scales.numel();
  std::vector<uint8_t> codes(count);
  std::mt19937_64 rng(mix64(stream));
  std::normal_distribution<float> magnitude(256.f, 25.6f);
  for (int64_t i = 0; i < count; ++i) codes[i] = float_to_e4m3(((rng() & 1) ? 1.f : -1.f) * magnitude(rng));
  backend.copy_from_host(codes.data(), w.scales);
  std::vector<float> nested(w.nested_scales.numel(), a0 / 256.f);
  backend.copy_from_host(nested.data(), w.nested_scales);
  const float offset = 0.f;
  backend.copy_from_host(&offset, w.nested_offset);
}

}  // namespace

float synthetic_scale(const QuantSpec& spec) {
  const double levels = std::ldexp(1.0, spec.bits);
  const double var_codes = (levels * levels - 1.0) / 12.0;  // uniform codes in [0, 2^bits)
  double var_zero = 0.0, mean_offset = 0.0;
  if (spec.symmetric) {
    mean_offset = 0.5;  // E[c] - 2^(bits-1)
  } else {
    const double width = 2.0 * zero_delta(spec.bits);
    var_zero = (width * width - 1.0) / 12.0;
  }
  return static_cast<float>(kLinearStd / std::sqrt(var_codes + var_zero + mean_offset * mean_offset));
}

std::string SyntheticQuant::format_label() const {
  if (format == Format::kNF4) return fmt::format("nf4 block {}", spec.group_size);
  std::string label = fmt::format("{} {} {}", format_name(format),
                                  spec.group_size == 0 ? std::string("per-channel") : fmt::format("g{}", spec.group_size),
                                  spec.symmetric ? "sym" : "asym");
  if (act_order) label += " act-order";
  return label;
}

std::string SyntheticQuant::describe(const ModelConfig& config, DType dense_dtype) const {
  const bool head = lm_head && !config.tie_word_embeddings;
  return fmt::format("{}: q,k,v,o,gate,up,down of {} layers{} ({} linears); dense {}: embeddings{}",
                     format_label(), config.num_layers, head ? " + lm_head" : "", 7 * config.num_layers + (head ? 1 : 0),
                     dtype_name(dense_dtype), head ? "" : (config.tie_word_embeddings ? " (lm_head tied)" : ", lm_head"));
}

Result<SyntheticQuant> synthetic_quant(std::string_view preset, bool symmetric, bool act_order, bool lm_head) {
  if (preset == "nf4") {
    if (symmetric || act_order) return invalid_argument("--quant nf4: --sym/--act-order do not apply (codebook format)");
    SyntheticQuant q;
    q.preset = "nf4";
    q.format = Format::kNF4;
    q.spec = QuantSpec{4, kNF4DefaultBlock, false};
    q.lm_head = lm_head;
    return q;
  }
  const QuantPreset* p = find_quant_preset(preset);
  if (p == nullptr) {
    std::string known;
    for (const QuantPreset& q : kQuantPresets) known += (known.empty() ? "" : ", ") + std::string(q.name);
    return invalid_argument("--quant: unknown preset '{}' (known: {}, nf4)", preset, known);
  }
  if (act_order && p->group_size == 0)
    return invalid_argument("--act-order: preset '{}' is per-channel (one group, so g_idx carries nothing); use a "
                            "grouped preset such as w4g128", preset);
  SyntheticQuant q;
  q.preset = std::string(p->name);
  if (!format_from_bits(p->bits, &q.format)) return invalid_argument("--quant {}: no format has {} bits", preset, p->bits);
  q.spec.bits = p->bits;
  q.spec.group_size = p->group_size;
  q.spec.symmetric = symmetric;
  q.act_order = act_order;
  q.lm_head = lm_head;
  return q;
}

Result<QuantizationConfig> synthetic_quantization_config(const ModelConfig& config, const SyntheticQuant& quant) {
  ASSIGN_OR_RETURN(const ArchitectureSpec* arch, find_architecture(config));
  ModuleQuantization mq;
  mq.format = quant.format;
  mq.spec = quant.spec;
  mq.act_order = quant.act_order;
  std::map<std::string, ModuleQuantization> modules;
  const TensorNames& n = arch->names;
  for (int l = 0; l < config.num_layers; ++l)
    for (const std::string* pattern : {&n.q, &n.k, &n.v, &n.o, &n.gate, &n.up, &n.down})
      modules[layer_tensor_name(*pattern, l)] = mq;
  if (quant.lm_head && !config.tie_word_embeddings) modules[n.lm_head.substr(0, n.lm_head.size() - 7)] = mq;
  return make_quantization_config(modules);
}

void fill_synthetic_weights(Model& model, uint64_t seed, const WeightFill& fill, const WordFill& fill_words) {
  ModelWeights& w = model.mutable_weights();
  Backend& backend = model.backend();
  const QuantizationConfig* quant = model.quantization();
  uint64_t stream = mix64(seed);
  auto linear = [&](LinearWeight& lw) {
    if (lw.format == Format::kNF4) {
      COMPACTOR_ASSERT(fill_words != nullptr, "fill_synthetic_weights: packed linears need a word fill");
      fill_words(lw.qweight, ++stream);  // every 4-bit pattern is a valid NF4 code
      clear_code_padding(backend, lw);
      fill_nf4_scales(backend, lw, ++stream);
    } else if (lw.quantized()) {
      COMPACTOR_ASSERT(fill_words != nullptr, "fill_synthetic_weights: packed linears need a word fill");
      const bool symmetric = quant != nullptr && quant->default_module.spec.symmetric;
      QuantSpec spec;
      spec.bits = lw.bits();
      spec.group_size = lw.group_size;
      spec.symmetric = symmetric;
      const float s0 = synthetic_scale(spec);
      fill_words(lw.qweight, ++stream);
      clear_code_padding(backend, lw);
      // Uniform codes are centred on 2^(bits-1) - 1/2, not on the symmetric zero 2^(bits-1): scales of
      // random sign keep those weights at mean 0 (a common-mode bias would grow through the layers).
      if (symmetric) fill(lw.scales, ++stream, 0.f, s0);
      else fill(lw.scales, ++stream, s0, 0.1f * s0);
      fill_zeros(backend, lw, symmetric, ++stream);
      if (lw.g_idx.data != nullptr) fill_g_idx(backend, lw, ++stream);
    } else {
      fill(lw.weight, ++stream, 0.f, kLinearStd);
    }
    if (lw.bias.data != nullptr) fill(lw.bias, ++stream, 0.f, 0.f);
  };
  fill(w.embed, ++stream, 0.f, kLinearStd);
  fill(w.final_norm, ++stream, 1.f, 0.f);
  if (w.lm_head.weight.data != w.embed.data || w.lm_head.quantized()) linear(w.lm_head);
  for (LayerWeights& lw : w.layers) {
    fill(lw.attn_norm, ++stream, 1.f, 0.f);
    fill(lw.mlp_norm, ++stream, 1.f, 0.f);
    for (LinearWeight* l : {&lw.q, &lw.k, &lw.v, &lw.o, &lw.gate, &lw.up, &lw.down}) linear(*l);
  }
}

Result<std::unique_ptr<Model>> make_synthetic_model(const ModelConfig& config, Backend& backend,
                                                    const SyntheticQuant* quant, uint64_t seed, const WeightFill& fill,
                                                    const WordFill& fill_words) {
  std::optional<QuantizationConfig> qc;
  if (quant != nullptr) {
    if (fill_words == nullptr) return invalid_argument("make_synthetic_model: a quantized model needs a word fill");
    ASSIGN_OR_RETURN(qc, synthetic_quantization_config(config, *quant));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<Model> m, Model::allocate(config, backend, qc ? &*qc : nullptr));
  fill_synthetic_weights(*m, seed, fill, fill_words);
  return m;
}

namespace {
// The packed tensors of a linear (LinearWeight::storage_bytes also counts the bias).
int64_t view_bytes(const View& v) { return v.data != nullptr ? v.bytes() : 0; }
int64_t packed_bytes(const LinearWeight& w) {
  return view_bytes(w.qweight) + view_bytes(w.scales) + view_bytes(w.qzeros) + view_bytes(w.g_idx) +
         view_bytes(w.nested_scales) + view_bytes(w.nested_offset);
}

// Calls f on every linear the model owns storage for (lm_head unless tied to the embeddings).
template <typename F>
void for_each_owned_linear(const ModelWeights& w, F&& f) {
  if (w.lm_head.weight.data != w.embed.data || w.lm_head.quantized()) f(w.lm_head);
  for (const LayerWeights& lw : w.layers)
    for (const LinearWeight* l : {&lw.q, &lw.k, &lw.v, &lw.o, &lw.gate, &lw.up, &lw.down}) f(*l);
}
}  // namespace

int64_t model_weight_bytes(const Model& model) {
  const ModelWeights& w = model.weights();
  int64_t total = w.embed.bytes() + w.final_norm.bytes();
  for (const LayerWeights& lw : w.layers) total += lw.attn_norm.bytes() + lw.mlp_norm.bytes();
  for_each_owned_linear(w, [&](const LinearWeight& lw) {
    total += view_bytes(lw.weight) + packed_bytes(lw) + view_bytes(lw.bias);
  });
  return total;
}

int64_t model_quantized_bytes(const Model& model) {
  int64_t total = 0;
  for_each_owned_linear(model.weights(), [&](const LinearWeight& lw) {
    if (lw.quantized()) total += packed_bytes(lw);
  });
  return total;
}

}  // namespace compactor
