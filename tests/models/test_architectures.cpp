// Every registered architecture end to end on tiny random checkpoints written in-test: Llama with
// llama3 rope scaling, untied lm_head and an explicit head_dim != hidden/heads; Llama with
// attention_bias; Mistral; Qwen2 (q/k/v biases). The model's logits are compared with an
// independent float64 forward written here from the Hugging Face modelling code's equations.
#include <cmath>
#include <fstream>
#include <map>
#include <numbers>
#include <random>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "model/model.h"
#include "support/fixtures.h"

namespace compactor {
namespace {

using Mat = std::vector<double>;  // row-major

struct TinyModel {
  nlohmann::json config;
  std::map<std::string, std::vector<float>> tensors;
  std::map<std::string, Shape> shapes;
};

struct Dims {
  int d = 48, f = 80, layers = 2, heads = 4, kv_heads = 2, head_dim = 16, vocab = 97;
};

TinyModel make_tiny(const std::string& arch, const std::string& model_type, bool qkv_bias, bool o_bias, bool tied,
                    uint32_t seed) {
  Dims s;
  TinyModel m;
  m.config = {{"architectures", {arch}}, {"model_type", model_type}, {"hidden_size", s.d},
              {"intermediate_size", s.f}, {"num_hidden_layers", s.layers}, {"num_attention_heads", s.heads},
              {"num_key_value_heads", s.kv_heads}, {"head_dim", s.head_dim}, {"vocab_size", s.vocab},
              {"max_position_embeddings", 256}, {"rms_norm_eps", 1e-5}, {"rope_theta", 500.0},
              {"hidden_act", "silu"}, {"tie_word_embeddings", tied}, {"torch_dtype", "float32"}};
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.3f);
  auto add = [&](const std::string& name, Shape shape, float offset = 0.0f) {
    std::vector<float> v(shape.numel());
    for (float& x : v) x = offset + normal(rng);
    m.tensors[name] = v;
    m.shapes[name] = shape;
  };
  const int64_t qd = s.heads * s.head_dim, kvd = s.kv_heads * s.head_dim;
  add("model.embed_tokens.weight", Shape{s.vocab, s.d});
  add("model.norm.weight", Shape{s.d}, 1.0f);
  if (!tied) add("lm_head.weight", Shape{s.vocab, s.d});
  for (int l = 0; l < s.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", Shape{s.d}, 1.0f);
    add(p + "post_attention_layernorm.weight", Shape{s.d}, 1.0f);
    add(p + "self_attn.q_proj.weight", Shape{qd, s.d});
    add(p + "self_attn.k_proj.weight", Shape{kvd, s.d});
    add(p + "self_attn.v_proj.weight", Shape{kvd, s.d});
    add(p + "self_attn.o_proj.weight", Shape{s.d, qd});
    add(p + "mlp.gate_proj.weight", Shape{s.f, s.d});
    add(p + "mlp.up_proj.weight", Shape{s.f, s.d});
    add(p + "mlp.down_proj.weight", Shape{s.d, s.f});
    if (qkv_bias) {
      add(p + "self_attn.q_proj.bias", Shape{qd});
      add(p + "self_attn.k_proj.bias", Shape{kvd});
      add(p + "self_attn.v_proj.bias", Shape{kvd});
    }
    if (o_bias) add(p + "self_attn.o_proj.bias", Shape{s.d});
  }
  return m;
}

void write(const TinyModel& m, const std::filesystem::path& dir) {
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "config.json") << m.config.dump(2);
  std::vector<NamedView> views;
  for (const auto& [name, data] : m.tensors)
    views.push_back({name, View{const_cast<float*>(data.data()), m.shapes.at(name), DType::kF32}});
  ASSERT_TRUE(write_safetensors(dir / "model.safetensors", views, {}).is_ok());
}

// ---- the independent float64 forward -------------------------------------------------------

Mat linear(const TinyModel& m, const std::string& base, const Mat& x, int64_t rows, int64_t in) {
  const auto& w = m.tensors.at(base + ".weight");
  const int64_t out = m.shapes.at(base + ".weight")[0];
  const auto bias = m.tensors.find(base + ".bias");
  Mat y(rows * out);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < out; ++o) {
      double acc = bias == m.tensors.end() ? 0.0 : bias->second[o];
      for (int64_t i = 0; i < in; ++i) acc += x[r * in + i] * w[o * in + i];
      y[r * out + o] = acc;
    }
  return y;
}

Mat rms_norm(const Mat& x, const std::vector<float>& w, int64_t rows, int64_t d, double eps) {
  Mat y(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int64_t i = 0; i < d; ++i) ss += x[r * d + i] * x[r * d + i];
    const double inv = 1.0 / std::sqrt(ss / d + eps);
    for (int64_t i = 0; i < d; ++i) y[r * d + i] = x[r * d + i] * inv * w[i];
  }
  return y;
}

std::vector<double> inv_freq(const nlohmann::json& c, int head_dim) {
  std::vector<double> f(head_dim / 2);
  for (int i = 0; i < head_dim / 2; ++i) f[i] = std::pow(c["rope_theta"].get<double>(), -2.0 * i / head_dim);
  if (c.contains("rope_scaling")) {  // llama3: transformers' _compute_llama3_parameters
    const auto& rs = c["rope_scaling"];
    const double factor = rs["factor"], lo = rs["low_freq_factor"], hi = rs["high_freq_factor"];
    const double old_ctx = rs["original_max_position_embeddings"];
    for (double& v : f) {
      const double wavelen = 2 * std::numbers::pi / v;
      if (wavelen > old_ctx / lo) {
        v /= factor;
      } else if (wavelen >= old_ctx / hi) {
        const double smooth = (old_ctx / wavelen - lo) / (hi - lo);
        v = (1 - smooth) * v / factor + smooth * v;
      }
    }
  }
  return f;
}

void rope(Mat& x, int64_t rows, int heads, int head_dim, const std::vector<double>& freq) {
  for (int64_t t = 0; t < rows; ++t)
    for (int h = 0; h < heads; ++h)
      for (int i = 0; i < head_dim / 2; ++i) {
        double* v = &x[(t * heads + h) * head_dim];
        const double a = t * freq[i], x1 = v[i], x2 = v[i + head_dim / 2];
        v[i] = x1 * std::cos(a) - x2 * std::sin(a);
        v[i + head_dim / 2] = x2 * std::cos(a) + x1 * std::sin(a);
      }
}

Mat attention(const Mat& q, const Mat& k, const Mat& v, int64_t T, int heads, int kv_heads, int hd) {
  Mat out(T * heads * hd, 0.0);
  for (int h = 0; h < heads; ++h) {
    const int kh = h / (heads / kv_heads);
    for (int64_t t = 0; t < T; ++t) {
      std::vector<double> s(t + 1);
      double mx = -1e300, sum = 0;
      for (int64_t j = 0; j <= t; ++j) {
        double dot = 0;
        for (int i = 0; i < hd; ++i) dot += q[(t * heads + h) * hd + i] * k[(j * kv_heads + kh) * hd + i];
        s[j] = dot / std::sqrt(static_cast<double>(hd));
        mx = std::max(mx, s[j]);
      }
      for (double& x : s) sum += x = std::exp(x - mx);
      for (int64_t j = 0; j <= t; ++j)
        for (int i = 0; i < hd; ++i) out[(t * heads + h) * hd + i] += s[j] / sum * v[(j * kv_heads + kh) * hd + i];
    }
  }
  return out;
}

Mat reference_logits(const TinyModel& m, const std::vector<int32_t>& ids) {
  const auto& c = m.config;
  const int d = c["hidden_size"], f = c["intermediate_size"], heads = c["num_attention_heads"];
  const int kvh = c["num_key_value_heads"], hd = c["head_dim"], vocab = c["vocab_size"];
  const double eps = c["rms_norm_eps"];
  const int64_t T = static_cast<int64_t>(ids.size());
  const auto freq = inv_freq(c, hd);
  Mat x(T * d);
  for (int64_t t = 0; t < T; ++t)
    for (int i = 0; i < d; ++i) x[t * d + i] = m.tensors.at("model.embed_tokens.weight")[ids[t] * d + i];
  for (int l = 0; l < c["num_hidden_layers"].get<int>(); ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    Mat h = rms_norm(x, m.tensors.at(p + "input_layernorm.weight"), T, d, eps);
    Mat q = linear(m, p + "self_attn.q_proj", h, T, d), k = linear(m, p + "self_attn.k_proj", h, T, d);
    Mat v = linear(m, p + "self_attn.v_proj", h, T, d);
    rope(q, T, heads, hd, freq);
    rope(k, T, kvh, hd, freq);
    Mat o = linear(m, p + "self_attn.o_proj", attention(q, k, v, T, heads, kvh, hd), T, heads * hd);
    for (size_t i = 0; i < x.size(); ++i) x[i] += o[i];
    h = rms_norm(x, m.tensors.at(p + "post_attention_layernorm.weight"), T, d, eps);
    Mat g = linear(m, p + "mlp.gate_proj", h, T, d), u = linear(m, p + "mlp.up_proj", h, T, d);
    for (size_t i = 0; i < g.size(); ++i) g[i] = g[i] / (1 + std::exp(-g[i])) * u[i];
    Mat down = linear(m, p + "mlp.down_proj", g, T, f);
    for (size_t i = 0; i < x.size(); ++i) x[i] += down[i];
  }
  Mat h = rms_norm(x, m.tensors.at("model.norm.weight"), T, d, eps);
  const bool tied = c["tie_word_embeddings"].get<bool>();
  return linear(m, tied ? "model.embed_tokens" : "lm_head", h, T, d);
  (void)vocab;
}

// ---- the test --------------------------------------------------------------------------------

struct Case {
  std::string name, arch, model_type;
  bool qkv_bias, o_bias, tied, llama3_scaling;
};

class Architectures : public ::testing::TestWithParam<Case> {};

TEST_P(Architectures, LogitsMatchAnIndependentFloat64Forward) {
  const Case& c = GetParam();
  TinyModel m = make_tiny(c.arch, c.model_type, c.qkv_bias, c.o_bias, c.tied, 42);
  if (c.o_bias) m.config["attention_bias"] = true;
  if (c.llama3_scaling)
    m.config["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                                {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 16}};
  const auto dir = test::make_temp_dir("arch-" + c.name);
  write(m, dir);
  auto backend = std::move(make_backend(BackendKind::kCpu)).value();
  auto model = Model::load(dir, *backend);
  ASSERT_TRUE(model.is_ok()) << model.status().message();
  std::vector<int32_t> ids = {3, 17, 96, 0, 45, 45, 8, 61, 2, 33, 70, 12};
  KvCache cache = (*model)->make_kv_cache(1, static_cast<int>(ids.size()));
  auto out = (*model)->forward({ids.data(), BatchLayout{1, static_cast<int>(ids.size())}, LogitsMode::kAll}, cache);
  ASSERT_TRUE(out.is_ok()) << out.status().message();
  Mat ref = reference_logits(m, ids);
  double err = 0, norm = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    err += (out->as<float>()[i] - ref[i]) * (out->as<float>()[i] - ref[i]);
    norm += ref[i] * ref[i];
  }
  EXPECT_LT(std::sqrt(err / norm), 1e-5) << c.name;
  std::filesystem::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(
    All, Architectures,
    ::testing::Values(Case{"llama3_untied", "LlamaForCausalLM", "llama", false, false, false, true},
                      Case{"llama_attention_bias", "LlamaForCausalLM", "llama", true, true, true, false},
                      Case{"mistral", "MistralForCausalLM", "mistral", false, false, false, false},
                      Case{"qwen2", "Qwen2ForCausalLM", "qwen2", true, false, true, false}),
    [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace compactor
