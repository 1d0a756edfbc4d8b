// Synthetic models: HF config values of public checkpoints, Model::allocate (weights on the
// backend, no files), and the random fill. Test: build-*/tests/test_synthetic_model.
#include "model/synthetic.h"

#include <cmath>

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
Result<std::unique_ptr<Model>> Model::allocate(const ModelConfig& config, Backend& backend) {
  std::unique_ptr<Model> m(new Model());
  m->backend_ = &backend;
  m->config_ = config;
  ASSIGN_OR_RETURN(m->arch_, find_architecture(config));
  const ModelConfig& c = m->config_;
  if (c.vocab_size <= 0 || c.hidden_size <= 0 || c.num_layers <= 0 || c.num_heads <= 0 || c.head_dim <= 0)
    return invalid_argument("Model::allocate: config has empty shapes");
  const DType act = backend.activation_dtype();
  auto tensor = [&](Shape s, DType d) {
    m->owned_.push_back(backend.alloc(s, d));
    return m->owned_.back().view();
  };
  auto linear = [&](std::string_view name, int64_t out, int64_t in) {
    LinearWeight w;
    w.out_features = out;
    w.in_features = in;
    w.weight = tensor(Shape{out, in}, act);
    format_from_dtype(act, &w.format);
    if (m->arch_->has_bias(c, name)) w.bias = tensor(Shape{out}, DType::kF32);
    return w;
  };
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
    m->weights_.lm_head = linear("lm_head", c.vocab_size, d);
  }
  m->weights_.layers.resize(c.num_layers);
  for (LayerWeights& lw : m->weights_.layers) {
    lw.attn_norm = tensor(Shape{d}, DType::kF32);
    lw.mlp_norm = tensor(Shape{d}, DType::kF32);
    lw.q = linear("q", q_out, d);
    lw.k = linear("k", kv_out, d);
    lw.v = linear("v", kv_out, d);
    lw.o = linear("o", d, q_out);
    lw.gate = linear("gate", f, d);
    lw.up = linear("up", f, d);
    lw.down = linear("down", d, f);
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

void fill_synthetic_weights(Model& model, uint64_t seed, const WeightFill& fill) {
  ModelWeights& w = model.mutable_weights();
  uint64_t stream = mix64(seed);
  auto linear = [&](LinearWeight& lw) {
    fill(lw.weight, ++stream, 0.f, kLinearStd);
    if (lw.bias.data != nullptr) fill(lw.bias, ++stream, 0.f, 0.f);
  };
  fill(w.embed, ++stream, 0.f, kLinearStd);
  fill(w.final_norm, ++stream, 1.f, 0.f);
  if (w.lm_head.weight.data != w.embed.data) linear(w.lm_head);
  for (LayerWeights& lw : w.layers) {
    fill(lw.attn_norm, ++stream, 1.f, 0.f);
    fill(lw.mlp_norm, ++stream, 1.f, 0.f);
    for (LinearWeight* l : {&lw.q, &lw.k, &lw.v, &lw.o, &lw.gate, &lw.up, &lw.down}) linear(*l);
  }
}

int64_t model_weight_bytes(const Model& model) {
  const ModelWeights& w = model.weights();
  int64_t total = w.embed.bytes() + w.final_norm.bytes();
  auto linear = [&](const LinearWeight& lw) { total += lw.weight.bytes() + (lw.bias.data ? lw.bias.bytes() : 0); };
  if (w.lm_head.weight.data != w.embed.data) linear(w.lm_head);
  for (const LayerWeights& lw : w.layers) {
    total += lw.attn_norm.bytes() + lw.mlp_norm.bytes();
    for (const LinearWeight* l : {&lw.q, &lw.k, &lw.v, &lw.o, &lw.gate, &lw.up, &lw.down}) linear(*l);
  }
  return total;
}

}  // namespace compactor
