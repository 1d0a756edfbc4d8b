// Whole-model checks against ../shared/reference (transformers float32): top-5 logits at every
// prompt position, last-position argmax/sum/L2 norm, and the 32-token greedy continuation, for
// all three fixture models on the CPU backend. Run: build/test_model_reference
#include <cmath>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "model/generate.h"
#include "model/model.h"
#include "support/fixtures.h"

namespace compactor {
namespace {

struct Loaded {
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Model> model;
};

Loaded load(const std::string& name) {
  Loaded l;
  l.backend = std::move(make_backend(BackendKind::kCpu)).value();
  auto m = Model::load(test::model_dir(name), *l.backend);
  EXPECT_TRUE(m.is_ok()) << m.status().message();
  l.model = std::move(m).value();
  return l;
}

nlohmann::json reference_prompts(const std::string& name) {
  std::ifstream in(test::reference_dir(name) / "prompts_logits.json");
  return nlohmann::json::parse(in);
}

std::vector<float> all_logits(Model& model, const std::vector<int32_t>& ids) {
  KvCache cache = model.make_kv_cache(1, static_cast<int>(ids.size()));
  auto out = model.forward({ids.data(), BatchLayout{1, static_cast<int>(ids.size())}, LogitsMode::kAll}, cache);
  EXPECT_TRUE(out.is_ok()) << out.status().message();
  std::vector<float> logits(out->numel());
  copy_to_host_f32(model.backend(), *out, logits.data());
  return logits;
}

class ReferenceLogits : public ::testing::TestWithParam<std::string> {};

TEST_P(ReferenceLogits, Top5LogitsAtEveryPositionMatchTransformers) {
  Loaded l = load(GetParam());
  const int64_t vocab = l.model->config().vocab_size;
  for (const auto& prompt : reference_prompts(GetParam())) {
    auto ids = prompt["input_ids"].get<std::vector<int32_t>>();
    std::vector<float> logits = all_logits(*l.model, ids);
    const auto& top5_ids = prompt["top5_ids"];
    const auto& top5_logits = prompt["top5_logits"];
    double max_rel = 0;
    for (size_t t = 0; t < ids.size(); ++t) {
      const float* row = &logits[t * vocab];
      double scale = 0;
      for (int64_t i = 0; i < vocab; ++i) scale = std::max(scale, std::fabs(static_cast<double>(row[i])));
      for (int r = 0; r < 5; ++r) {
        const int id = top5_ids[t][r].get<int>();
        const double ref = top5_logits[t][r].get<double>();
        // The reference stores 5 decimals; compare relative to the row's largest logit.
        max_rel = std::max(max_rel, std::fabs(row[id] - ref) / scale);
      }
      EXPECT_EQ(std::max_element(row, row + vocab) - row, top5_ids[t][0].get<int>()) << "position " << t;
    }
    EXPECT_LT(max_rel, 1e-4) << prompt["prompt"];
  }
}

TEST_P(ReferenceLogits, LastLogitSumAndNormMatch) {
  Loaded l = load(GetParam());
  const int64_t vocab = l.model->config().vocab_size;
  for (const auto& prompt : reference_prompts(GetParam())) {
    auto ids = prompt["input_ids"].get<std::vector<int32_t>>();
    std::vector<float> logits = all_logits(*l.model, ids);
    const float* last = &logits[(ids.size() - 1) * vocab];
    double sum = 0, sq = 0;
    for (int64_t i = 0; i < vocab; ++i) { sum += last[i]; sq += static_cast<double>(last[i]) * last[i]; }
    const double norm = std::sqrt(sq);
    EXPECT_NEAR(norm, prompt["last_logits_norm"].get<double>(), 1e-4 * norm);
    // The sum cancels; compare it against the norm's scale.
    EXPECT_NEAR(sum, prompt["last_logits_sum"].get<double>(), 1e-4 * norm * std::sqrt(static_cast<double>(vocab)));
    EXPECT_EQ(std::max_element(last, last + vocab) - last, prompt["last_logits_argmax"].get<int>());
  }
}

TEST_P(ReferenceLogits, GreedyContinuationMatches) {
  Loaded l = load(GetParam());
  for (const auto& prompt : reference_prompts(GetParam())) {
    auto ids = prompt["input_ids"].get<std::vector<int32_t>>();
    auto expected = prompt["greedy_32_ids"].get<std::vector<int32_t>>();
    GenerateOptions opts;
    opts.max_tokens = static_cast<int>(expected.size());
    opts.stop_at_eos = StopAtEos::kNo;
    auto r = generate(*l.model, ids, opts);
    ASSERT_TRUE(r.is_ok()) << r.status().message();
    EXPECT_EQ(r->ids, expected) << prompt["prompt"];
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ReferenceLogits,
                         ::testing::Values("fixture-llama-sp", "fixture-llama-bpe", "stories260K"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& c : n) if (c == '-') c = '_';
                           return n;
                         });

TEST(ModelBatch, BatchedForwardEqualsSeparateForwards) {
  Loaded l = load("fixture-llama-sp");
  const int64_t vocab = l.model->config().vocab_size;
  std::vector<int32_t> a = {1, 450, 4996, 17354, 1701, 29916};
  std::vector<int32_t> b = {1, 9038, 2501, 263, 931, 29892};
  std::vector<float> la = all_logits(*l.model, a), lb = all_logits(*l.model, b);
  std::vector<int32_t> both(a);
  both.insert(both.end(), b.begin(), b.end());
  KvCache cache = l.model->make_kv_cache(2, 6);
  auto out = l.model->forward({both.data(), BatchLayout{2, 6}, LogitsMode::kAll}, cache);
  ASSERT_TRUE(out.is_ok());
  std::vector<float> lab(out->numel());
  copy_to_host_f32(l.model->backend(), *out, lab.data());
  for (int64_t i = 0; i < 6 * vocab; ++i) {
    ASSERT_NEAR(lab[i], la[i], 1e-3f);
    ASSERT_NEAR(lab[6 * vocab + i], lb[i], 1e-3f);
  }
}

TEST(ModelBatch, IncrementalDecodeEqualsFullForward) {
  Loaded l = load("stories260K");
  const int64_t vocab = l.model->config().vocab_size;
  std::vector<int32_t> ids = {1, 403, 407, 261, 378, 10, 261, 263, 260, 372};
  std::vector<float> full = all_logits(*l.model, ids);
  KvCache cache = l.model->make_kv_cache(1, 16);
  auto first = l.model->forward({ids.data(), BatchLayout{1, 4}, LogitsMode::kLast}, cache);
  ASSERT_TRUE(first.is_ok());
  for (size_t t = 4; t < ids.size(); ++t) {
    auto out = l.model->forward({&ids[t], BatchLayout{1, 1}, LogitsMode::kLast}, cache);
    ASSERT_TRUE(out.is_ok());
    std::vector<float> step(vocab);
    copy_to_host_f32(l.model->backend(), *out, step.data());
    for (int64_t i = 0; i < vocab; ++i) ASSERT_NEAR(step[i], full[t * vocab + i], 1e-4f) << "t=" << t;
  }
}

TEST(ModelErrors, ContextBeyondMaximumIsAnError) {
  Loaded l = load("stories260K");  // max_position_embeddings 512
  std::vector<int32_t> ids(600, 5);
  KvCache cache = l.model->make_kv_cache(1, 600);
  auto out = l.model->forward({ids.data(), BatchLayout{1, 600}, LogitsMode::kLast}, cache);
  ASSERT_FALSE(out.is_ok());
  EXPECT_NE(out.status().message().find("max_position_embeddings"), std::string::npos) << out.status().message();
}

TEST(ModelErrors, TokenOutsideVocabularyIsAnError) {
  Loaded l = load("stories260K");
  std::vector<int32_t> ids = {1, 512};
  KvCache cache = l.model->make_kv_cache(1, 2);
  auto out = l.model->forward({ids.data(), BatchLayout{1, 2}, LogitsMode::kLast}, cache);
  ASSERT_FALSE(out.is_ok());
  EXPECT_NE(out.status().message().find("vocabulary"), std::string::npos);
}

}  // namespace
}  // namespace compactor
