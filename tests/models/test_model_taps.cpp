// Taps (named intermediates) and generation determinism on stories260K.
#include <cmath>
#include <map>

#include <gtest/gtest.h>

#include "model/generate.h"
#include "model/model.h"
#include "support/fixtures.h"

namespace compactor {
namespace {

struct Fixture {
  std::unique_ptr<Backend> backend = std::move(make_backend(BackendKind::kCpu)).value();
  std::unique_ptr<Model> model = std::move(Model::load(test::model_dir("stories260K"), *backend)).value();
};

TEST(Taps, EveryNamedIntermediateIsReportedWithItsShape) {
  Fixture f;
  const ModelConfig& c = f.model->config();
  std::map<std::string, int> counts;
  std::map<std::string, Shape> shapes;
  TapFn tap = [&](std::string_view name, int layer, View v) {
    counts[std::string(name)]++;
    shapes[std::string(name)] = v.shape;
  };
  std::vector<int32_t> ids = {1, 20, 30, 40, 50};
  KvCache cache = f.model->make_kv_cache(1, 5);
  ASSERT_TRUE(f.model->forward({ids.data(), BatchLayout{1, 5}, LogitsMode::kAll, &tap}, cache).is_ok());
  for (const char* n : {"layer_input", "attn_norm", "q", "k", "v", "attn_output", "attn_out", "ffn_norm", "ffn_act",
                        "ffn_out"})
    EXPECT_EQ(counts[n], c.num_layers) << n;
  EXPECT_EQ(counts["logits"], 1);
  EXPECT_EQ(shapes["ffn_act"], (Shape{5, c.intermediate_size}));
  EXPECT_EQ(shapes["k"], (Shape{5, c.num_kv_heads * c.head_dim}));
  EXPECT_EQ(shapes["logits"], (Shape{5, c.vocab_size}));
}

TEST(Taps, FirstNormEqualsAnIndependentRmsNormOfTheEmbedding) {
  Fixture f;
  const ModelConfig& c = f.model->config();
  std::vector<float> captured;
  TapFn tap = [&](std::string_view name, int layer, View v) {
    if (name == "attn_norm" && layer == 0) captured.assign(v.as<float>(), v.as<float>() + v.numel());
  };
  std::vector<int32_t> ids = {1, 77};
  KvCache cache = f.model->make_kv_cache(1, 2);
  ASSERT_TRUE(f.model->forward({ids.data(), BatchLayout{1, 2}, LogitsMode::kNone, &tap}, cache).is_ok());
  ASSERT_EQ(captured.size(), static_cast<size_t>(2 * c.hidden_size));
  const View embed = f.model->weights().embed, norm = f.model->weights().layers[0].attn_norm;
  std::vector<float> row(c.hidden_size), w(c.hidden_size);
  convert_to_f32(norm.data, norm.dtype, c.hidden_size, w.data());
  for (int t = 0; t < 2; ++t) {
    convert_to_f32(static_cast<const char*>(embed.data) + ids[t] * c.hidden_size * dtype_size(embed.dtype), embed.dtype,
                   c.hidden_size, row.data());
    double ss = 0;
    for (float x : row) ss += static_cast<double>(x) * x;
    const double inv = 1.0 / std::sqrt(ss / c.hidden_size + c.rms_norm_eps);
    for (int64_t i = 0; i < c.hidden_size; ++i)
      EXPECT_NEAR(captured[t * c.hidden_size + i], row[i] * inv * w[i], 1e-5) << "t=" << t << " i=" << i;
  }
}

TEST(Generate, SameSeedSameText) {
  Fixture f;
  GenerateOptions o;
  o.max_tokens = 20;
  o.sampling = SamplingParams{0.9f, 40, 0.95f, 1234};
  o.stop_at_eos = StopAtEos::kNo;
  std::vector<int32_t> prompt = {1, 403, 407};
  auto a = generate(*f.model, prompt, o), b = generate(*f.model, prompt, o);
  ASSERT_TRUE(a.is_ok() && b.is_ok());
  EXPECT_EQ(a->ids, b->ids);
  o.sampling.seed = 99;
  auto c = generate(*f.model, prompt, o);
  ASSERT_TRUE(c.is_ok());
  EXPECT_NE(a->ids, c->ids);
}

TEST(Generate, TopKOneIsGreedy) {
  Fixture f;
  GenerateOptions greedy, topk;
  greedy.max_tokens = topk.max_tokens = 16;
  greedy.stop_at_eos = topk.stop_at_eos = StopAtEos::kNo;
  topk.sampling = SamplingParams{1.5f, 1, 1.0f, 7};
  std::vector<int32_t> prompt = {1, 403, 407};
  auto a = generate(*f.model, prompt, greedy), b = generate(*f.model, prompt, topk);
  ASSERT_TRUE(a.is_ok() && b.is_ok());
  EXPECT_EQ(a->ids, b->ids);
}

TEST(Generate, StopsAtEos) {
  Fixture f;
  GenerateOptions o;
  o.max_tokens = 400;
  o.eos_ids = {2};
  std::vector<int32_t> prompt = {1, 403, 407};
  auto r = generate(*f.model, prompt, o);
  ASSERT_TRUE(r.is_ok());
  if (r->stop_reason == "eos") {
    EXPECT_EQ(r->ids.back(), 2);
  } else {
    EXPECT_EQ(r->ids.size(), 400u);
    EXPECT_EQ(std::count(r->ids.begin(), r->ids.end(), 2), 0);
  }
}

}  // namespace
}  // namespace compactor
