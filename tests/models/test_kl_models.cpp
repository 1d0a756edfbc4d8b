// KL divergence on real models: stories260K against a copy with perturbed MLP weights (written to a
// temp dir). evaluate_kl's statistics equal a KL computed here in double precision from both
// models' logits on the same windows; a model against itself gives 0 and full top-1 agreement;
// saved base logits with k = V reproduce the exact KL and smaller k gives a lower bound; a saved
// base from other settings is refused.
// Run: build-*/tests/test_kl_models   (~5 s)
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "eval/kl_divergence.h"
#include "io/safetensors.h"
#include "io/text_file.h"
#include "support/fixtures.h"
#include "tokenizer/tokenizer.h"

namespace compactor {
namespace {

class KlModels : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::filesystem::path(test::make_temp_dir("kl_models"));
    const auto src = test::model_dir("stories260K");
    for (const char* f : {"config.json", "tokenizer.model", "tokenizer_config.json"})
      std::filesystem::copy_file(src / f, *dir_ / f);
    auto st = SafetensorsFile::open(src / "model.safetensors");
    ASSERT_TRUE(st.is_ok());
    std::vector<std::vector<float>> data;
    std::vector<NamedView> views;
    data.reserve((*st)->tensors().size());
    for (const TensorEntry& e : (*st)->tensors()) {
      data.emplace_back(reinterpret_cast<const float*>(e.data), reinterpret_cast<const float*>(e.data) + e.shape.numel());
      if (e.name.find("mlp.down_proj") != std::string::npos)
        for (size_t i = 0; i < data.back().size(); ++i) data.back()[i] *= (i % 3 == 0) ? 1.3f : 0.9f;
      views.push_back({e.name, View{data.back().data(), e.shape, DType::kF32, Device::kCpu}});
    }
    ASSERT_TRUE(write_safetensors(*dir_ / "model.safetensors", views).is_ok());
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*dir_);
    delete dir_;
  }
  void SetUp() override {
    backend_ = std::move(make_backend(BackendKind::kCpu)).value();
    base_ = std::move(Model::load(test::model_dir("stories260K"), *backend_)).value();
    model_ = std::move(Model::load(*dir_, *backend_)).value();
    auto tok = std::move(load_tokenizer(*dir_)).value();
    auto text = read_text_file(test::shared_dir() / "data/calibration/tiny.utf8");
    ASSERT_TRUE(text.is_ok());
    tokens_ = tok->encode(text->substr(0, 20000), false);
    bos_ = tok->bos_id();
    opts_.ppl.ctx = 128;
    opts_.ppl.limit_windows = 6;
    opts_.ppl.batch = 4;
    opts_.ppl.quiet = true;
  }
  static std::filesystem::path* dir_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Model> base_, model_;
  std::vector<int32_t> tokens_;
  int32_t bos_ = -1;
  KlOptions opts_;
};
std::filesystem::path* KlModels::dir_ = nullptr;

std::vector<float> window_logits(Model& m, std::vector<int32_t>& ids) {
  KvCache cache = m.make_kv_cache(1, static_cast<int>(ids.size()));
  auto l = m.forward({ids.data(), BatchLayout{1, static_cast<int>(ids.size())}, LogitsMode::kAll}, cache);
  EXPECT_TRUE(l.is_ok());
  std::vector<float> host(static_cast<size_t>(l->numel()));
  copy_to_host_f32(m.backend(), *l, host.data());
  return host;
}

TEST_F(KlModels, MatchesAnIndependentComputation) {
  auto run = evaluate_kl(*model_, base_.get(), nullptr, tokens_, bos_, opts_, nullptr);
  ASSERT_TRUE(run.is_ok()) << run.status().message();
  const KlSummary s = summarize_kl(run->tokens, {});
  // Independent: per window, both models' logits, softmax in double, KL and top-1 here.
  auto plan = plan_perplexity(static_cast<int64_t>(tokens_.size()), 512, opts_.ppl);
  ASSERT_TRUE(plan.is_ok());
  const int64_t v = base_->config().vocab_size;
  double kl_sum = 0, agree = 0, dp = 0;
  int64_t n = 0;
  for (size_t w = 0; w < plan->starts.size(); ++w) {
    std::vector<int32_t> ids(128), targets(128);
    fill_window(tokens_, bos_, *plan, w, BosMode::kPrepend, ids.data(), targets.data());
    const auto lb = window_logits(*base_, ids), lm = window_logits(*model_, ids);
    for (int j = 0; j < 128; ++j) {
      if (targets[j] < 0) continue;
      const float* b = &lb[j * v];
      const float* m = &lm[j * v];
      double zb = 0, zm = 0;
      for (int64_t i = 0; i < v; ++i) zb += std::exp(static_cast<double>(b[i]));
      for (int64_t i = 0; i < v; ++i) zm += std::exp(static_cast<double>(m[i]));
      double kl = 0;
      for (int64_t i = 0; i < v; ++i) {
        const double p = std::exp(static_cast<double>(b[i])) / zb, q = std::exp(static_cast<double>(m[i])) / zm;
        kl += p * std::log(p / q);
      }
      kl_sum += kl;
      agree += (std::max_element(b, b + v) - b) == (std::max_element(m, m + v) - m);
      dp += std::exp(static_cast<double>(m[targets[j]])) / zm - std::exp(static_cast<double>(b[targets[j]])) / zb;
      ++n;
    }
  }
  ASSERT_EQ(s.n, n);
  EXPECT_GT(s.kld.value, 1e-3);  // the perturbation is visible
  EXPECT_NEAR(s.kld.value, kl_sum / n, 1e-5 * kl_sum / n + 1e-7);
  EXPECT_NEAR(s.top1.value, agree / n, 1e-12);
  EXPECT_NEAR(s.delta_p.value, dp / n, 1e-6);
  EXPECT_LE(s.kld_p99, s.kld_max);
  std::printf("mean KLD %.5f, p99 %.5f, top-1 %.4f, Δp %.5f, ppl %.3f vs base %.3f (n %lld)\n", s.kld.value, s.kld_p99,
              s.top1.value, s.delta_p.value, s.ppl_model, s.ppl_base, static_cast<long long>(s.n));
}

TEST_F(KlModels, SelfIsZero) {
  auto run = evaluate_kl(*base_, base_.get(), nullptr, tokens_, bos_, opts_, nullptr);
  ASSERT_TRUE(run.is_ok());
  const KlSummary s = summarize_kl(run->tokens, {});
  EXPECT_LT(s.kld.value, 1e-9);
  EXPECT_EQ(s.top1.value, 1.0);
  EXPECT_DOUBLE_EQ(s.ppl_model, s.ppl_base);
}

TEST_F(KlModels, SavedBaseLogits) {
  const int64_t v = base_->config().vocab_size;
  auto exact = evaluate_kl(*model_, base_.get(), nullptr, tokens_, bos_, opts_, nullptr);
  ASSERT_TRUE(exact.is_ok());
  const double exact_kl = summarize_kl(exact->tokens, {}).kld.value;
  for (int k : {static_cast<int>(v), 8}) {
    KlOptions save_opts = opts_;
    save_opts.save_topk = k;
    BaseLogits saved;
    auto rec = evaluate_kl(*base_, nullptr, nullptr, tokens_, bos_, save_opts, &saved);  // records base_ only
    ASSERT_TRUE(rec.is_ok()) << rec.status().message();
    EXPECT_TRUE(rec->tokens.empty());
    EXPECT_EQ(saved.positions(), static_cast<int64_t>(exact->tokens.size()));
    const auto path = *dir_ / "base.safetensors";
    ASSERT_TRUE(save_base_logits(path, saved).is_ok());
    auto loaded = load_base_logits(path);
    ASSERT_TRUE(loaded.is_ok()) << loaded.status().message();
    auto approx = evaluate_kl(*model_, nullptr, &*loaded, tokens_, bos_, opts_, nullptr);
    ASSERT_TRUE(approx.is_ok()) << approx.status().message();
    const KlSummary s = summarize_kl(approx->tokens, {});
    const KlSummary e = summarize_kl(exact->tokens, {});
    if (k == v) EXPECT_NEAR(s.kld.value, exact_kl, 1e-4 * exact_kl);
    EXPECT_LE(s.kld.value, exact_kl * (1 + 1e-5));
    EXPECT_GT(s.kld.value, 0.5 * exact_kl) << "k " << k;
    EXPECT_DOUBLE_EQ(s.top1.value, e.top1.value);
    EXPECT_NEAR(s.delta_p.value, e.delta_p.value, 1e-6);
    std::printf("k %d: KLD %.6f (exact %.6f)\n", k, s.kld.value, exact_kl);
  }
  // A base saved with other settings scores other positions: refused, not silently misaligned.
  KlOptions other = opts_;
  other.ppl.limit_windows = 3;
  other.save_topk = 4;
  BaseLogits fewer;
  ASSERT_TRUE(evaluate_kl(*base_, nullptr, nullptr, tokens_, bos_, other, &fewer).is_ok());
  auto refused = evaluate_kl(*model_, nullptr, &fewer, tokens_, bos_, opts_, nullptr);
  ASSERT_FALSE(refused.is_ok());
  EXPECT_NE(refused.status().message().find("saved logits"), std::string::npos) << refused.status().message();
  std::vector<int32_t> other_text(tokens_.begin() + 1, tokens_.end());
  auto other_tokens = evaluate_kl(*model_, nullptr, &fewer, other_text, bos_, other, nullptr);
  ASSERT_FALSE(other_tokens.is_ok());
  EXPECT_NE(other_tokens.status().message().find("other text"), std::string::npos);
}

}  // namespace
}  // namespace compactor
