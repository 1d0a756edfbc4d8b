// KL divergence arithmetic on crafted logits: a closed-form two-token case, identical rows, the
// top-k + tail form (exact at k = V, a lower bound below), summary statistics, and the saved
// base-logits file (round trip, refusal of foreign or damaged files).
// Run: build-*/tests/test_kl_divergence
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "eval/kl_divergence.h"
#include "io/safetensors.h"
#include "support/fixtures.h"

namespace compactor {
namespace {

std::vector<float> random_logits(int64_t v, uint64_t seed, float scale) {
  SplitMix64 rng(seed);
  std::vector<float> x(static_cast<size_t>(v));
  for (auto& e : x) e = scale * (static_cast<float>(rng.below(1u << 20)) / (1u << 20) - 0.5f);
  return x;
}

TEST(KlDivergence, ClosedFormTwoTokens) {
  const float base[2] = {0.f, 0.f};                           // p = (1/2, 1/2)
  const float model[2] = {static_cast<float>(std::log(3.0)), 0.f};  // q = (3/4, 1/4)
  const TokenComparison t = compare_token(base, model, 2, 1);
  EXPECT_NEAR(t.kld, 0.5 * std::log(4.0 / 3.0), 1e-6);
  EXPECT_NEAR(t.p_base, 0.5, 1e-6);
  EXPECT_NEAR(t.p_model, 0.25, 1e-6);
  EXPECT_NEAR(t.nll_model, std::log(4.0), 1e-6);
  EXPECT_TRUE(t.same_top1);  // base's argmax is token 0 (the first of a tie), the model's too
}

TEST(KlDivergence, IdenticalRowsAndTopK) {
  const int64_t v = 500;
  const auto a = random_logits(v, 1, 12.f), b = random_logits(v, 2, 12.f);
  const TokenComparison same = compare_token(a.data(), a.data(), v, 7);
  EXPECT_NEAR(same.kld, 0.0, 1e-9);
  EXPECT_TRUE(same.same_top1);
  EXPECT_DOUBLE_EQ(same.p_base, same.p_model);
  const TokenComparison exact = compare_token(a.data(), b.data(), v, 7);
  std::vector<int32_t> ids(v);
  std::vector<float> logp(v);
  std::vector<float> lsm(v);
  log_softmax_row(a.data(), v, lsm.data());
  top_k_logprobs(a.data(), v, static_cast<int>(v), ids.data(), logp.data());
  EXPECT_GE(logp[0], logp[1]);
  const TokenComparison full = compare_token_topk(ids.data(), logp.data(), static_cast<int>(v), lsm[7], b.data(), v, 7);
  EXPECT_NEAR(full.kld, exact.kld, 1e-4 * std::max(1.0, exact.kld));
  EXPECT_EQ(full.same_top1, exact.same_top1);
  EXPECT_NEAR(full.p_model, exact.p_model, 1e-9);
  EXPECT_NEAR(full.p_base, exact.p_base, 1e-6);
  for (int k : {1, 8, 64}) {
    top_k_logprobs(a.data(), v, k, ids.data(), logp.data());
    const TokenComparison approx = compare_token_topk(ids.data(), logp.data(), k, lsm[7], b.data(), v, 7);
    EXPECT_LE(approx.kld, exact.kld + 1e-6) << "k " << k;  // coarsening never raises KL
    EXPECT_EQ(approx.same_top1, exact.same_top1);
  }
}

TEST(KlDivergence, TwoTokenTieTopOne) {
  // Ties resolve to the first index for both rows, so equal distributions agree on top-1.
  const float flat[2] = {0.f, 0.f};
  EXPECT_TRUE(compare_token(flat, flat, 2, 0).same_top1);
}

TEST(KlDivergence, Summary) {
  std::vector<TokenComparison> t(100);
  for (int i = 0; i < 100; ++i) {
    t[i].kld = i;  // 0..99
    t[i].same_top1 = i < 90;
    t[i].p_base = 0.5;
    t[i].p_model = 0.4;
    t[i].nll_base = 1.0;
    t[i].nll_model = 2.0;
  }
  const KlSummary s = summarize_kl(t, {100, 1});
  EXPECT_DOUBLE_EQ(s.kld.value, 49.5);
  EXPECT_DOUBLE_EQ(s.kld_p99, 98.01);
  EXPECT_DOUBLE_EQ(s.kld_median, 49.5);
  EXPECT_DOUBLE_EQ(s.kld_max, 99);
  EXPECT_DOUBLE_EQ(s.top1.value, 0.9);
  EXPECT_NEAR(s.delta_p.value, -0.1, 1e-12);
  EXPECT_NEAR(s.rms_delta_p, 0.1, 1e-12);
  EXPECT_NEAR(s.ppl_base, std::exp(1.0), 1e-12);
  EXPECT_NEAR(s.ppl_model, std::exp(2.0), 1e-12);
}

TEST(KlDivergence, SavedBaseRoundTripAndBadFiles) {
  const auto dir = test::make_temp_dir("kl_file");
  BaseLogits b;
  b.k = 2;
  b.vocab = 10;
  b.text_tokens = {5, 6, 7};
  b.targets = {6, 7};
  b.topk_ids = {1, 2, 3, 4};
  b.topk_logp = {-0.1f, -2.f, -0.5f, -1.f};
  b.target_logp = {-3.f, -4.f};
  b.meta = kl_settings_meta(PerplexityOptions{}, "abc");
  ASSERT_TRUE(save_base_logits(dir / "b.safetensors", b).is_ok());
  auto r = load_base_logits(dir / "b.safetensors");
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  EXPECT_EQ(r->k, 2);
  EXPECT_EQ(r->vocab, 10);
  EXPECT_EQ(r->topk_ids, b.topk_ids);
  EXPECT_EQ(r->topk_logp, b.topk_logp);
  EXPECT_EQ(r->target_logp, b.target_logp);
  EXPECT_EQ(r->meta["data_sha256"], "abc");
  EXPECT_EQ(r->meta["ctx"], "512");
  // A safetensors file that is not a base-logits file, a truncated file, an id outside the vocabulary.
  float w[2] = {1, 2};
  ASSERT_TRUE(write_safetensors(dir / "w.safetensors", {{"w", View{w, Shape{2}, DType::kF32, Device::kCpu}}}).is_ok());
  auto foreign = load_base_logits(dir / "w.safetensors");
  ASSERT_FALSE(foreign.is_ok());
  EXPECT_NE(foreign.status().message().find("not a compactor base-logits file"), std::string::npos);
  std::filesystem::copy_file(dir / "b.safetensors", dir / "t.safetensors");
  std::filesystem::resize_file(dir / "t.safetensors", std::filesystem::file_size(dir / "b.safetensors") - 8);
  EXPECT_FALSE(load_base_logits(dir / "t.safetensors").is_ok());
  b.topk_ids[3] = 10;
  ASSERT_TRUE(save_base_logits(dir / "v.safetensors", b).is_ok());
  auto bad_id = load_base_logits(dir / "v.safetensors");
  ASSERT_FALSE(bad_id.is_ok());
  EXPECT_NE(bad_id.status().message().find("outside the vocabulary"), std::string::npos);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace compactor
