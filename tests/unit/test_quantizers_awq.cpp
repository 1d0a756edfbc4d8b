// AWQ's searches and folds on synthetic matrices (activation outliers), and the per-module rules
// of mixed precision (parsing, patterns, precedence).
// Run: build-comp/tests/test_quantizers_awq
#include <cmath>
#include <random>

#include <gtest/gtest.h>

#include "compress/awq.h"
#include "compress/hessian.h"
#include "compress/module_rules.h"
#include "compress/quant_grid.h"

namespace compactor {
namespace {

struct Problem {
  int64_t t, k, n;
  std::vector<float> x, w;
  InputStats stats;
};

// Activations with a few channels 20x larger than the rest (what AWQ protects).
Problem make_problem(int64_t t, int64_t k, int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.f, 1.f);
  Problem p{t, k, n, std::vector<float>(t * k), std::vector<float>(n * k), InputStats(k)};
  for (int64_t i = 0; i < t; ++i)
    for (int64_t j = 0; j < k; ++j) p.x[i * k + j] = g(rng) * (j % 29 == 3 ? 20.f : 1.f);
  for (float& v : p.w) v = 0.05f * g(rng);
  p.stats.add(p.x.data(), t);
  return p;
}

TEST(Awq, ScaleSearchNeverLosesToRtnAndProtectsOutlierChannels) {
  Problem p = make_problem(512, 256, 64, 1);
  QuantSpec spec{3, 64, false};
  AwqLinear l{p.w.data(), p.n, spec};
  AwqScaleResult r = awq_search_scales({l}, p.k, p.stats.mean_abs(), p.stats.gram(), AwqOptions{});
  EXPECT_LE(r.loss, r.rtn_loss);
  EXPECT_GT(r.alpha, 0.f);
  EXPECT_LT(r.loss, 0.9 * r.rtn_loss) << r.loss << " vs " << r.rtn_loss;
  ASSERT_EQ(r.scales.size(), 256u);
  EXPECT_GT(r.scales[3], r.scales[4]);  // outlier channel 3 scaled up
  // The loss reported is the output error of the folded, quantized linear.
  std::vector<float> ws = p.w;
  scale_columns(ws.data(), p.n, p.k, r.scales);
  std::vector<float> deq = dequantize_linear(rtn_quantize(ws.data(), p.n, p.k, spec));
  for (int64_t n = 0; n < p.n; ++n)
    for (int64_t k = 0; k < p.k; ++k) deq[n * p.k + k] /= r.scales[k];
  EXPECT_NEAR(quadratic_error(p.w.data(), deq.data(), p.n, p.k, p.stats.gram().data()), r.loss, 1e-3 * r.loss);
}

TEST(Awq, DuoScalingIsAlsoNeverWorseThanRtn) {
  Problem p = make_problem(512, 256, 64, 6);
  AwqOptions o;
  o.duo_scaling = true;
  AwqScaleResult r =
      awq_search_scales({AwqLinear{p.w.data(), p.n, QuantSpec{4, 128, true}}}, p.k, p.stats.mean_abs(), p.stats.gram(), o);
  EXPECT_LE(r.loss, r.rtn_loss);
  EXPECT_GT(r.alpha, 0.f);
  for (float v : r.scales) ASSERT_TRUE(std::isfinite(v) && v > 0.f);
}

TEST(Awq, FoldingIsExactInFloat) {
  Problem p = make_problem(16, 64, 8, 2);
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(0.1f, 10.f);
  std::vector<float> s(p.k);
  for (float& v : s) v = u(rng);
  // X·Wᵀ == (X·diag(s)⁻¹)·(W·diag(s))ᵀ
  std::vector<float> ws = p.w;
  scale_columns(ws.data(), p.n, p.k, s);
  for (int64_t t = 0; t < p.t; ++t)
    for (int64_t n = 0; n < p.n; ++n) {
      double y = 0, y2 = 0;
      for (int64_t k = 0; k < p.k; ++k) {
        y += p.x[t * p.k + k] * p.w[n * p.k + k];
        y2 += (p.x[t * p.k + k] / s[k]) * ws[n * p.k + k];
      }
      ASSERT_NEAR(y, y2, 1e-5 * (1 + std::fabs(y)));
    }
  // The Gram matrix of X·diag(s)⁻¹ is D⁻¹ XᵀX D⁻¹.
  std::vector<float> xs = p.x;
  for (int64_t t = 0; t < p.t; ++t)
    for (int64_t k = 0; k < p.k; ++k) xs[t * p.k + k] /= s[k];
  InputStats scaled(p.k);
  scaled.add(xs.data(), p.t);
  std::vector<float> g = p.stats.gram();
  scale_gram(g, s);
  for (int64_t i = 0; i < p.k * p.k; ++i) ASSERT_NEAR(g[i], scaled.gram()[i], 1e-4f * (1 + std::fabs(g[i])));
  // divide_rows undoes the output side of a fold: rows of the producer.
  std::vector<float> w8 = p.w;
  std::vector<float> rs(p.n, 4.f);
  divide_rows(w8.data(), p.n, p.k, rs);
  EXPECT_FLOAT_EQ(w8[5], p.w[5] / 4.f);
}

TEST(Awq, ClippingLowersTheGroupErrorAndStaysInRange) {
  Problem p = make_problem(512, 128, 32, 4);
  // Heavy-tailed weights: clipping a few large ones buys resolution for the rest.
  std::mt19937 rng(5);
  std::student_t_distribution<float> heavy(2.f);
  for (float& v : p.w) v = 0.02f * heavy(rng);
  QuantSpec spec{3, 32, false};
  std::vector<float> w = p.w;
  const std::vector<float>& gram = p.stats.gram();
  // Block-diagonal (per-group) error before clipping, as the search measures it.
  auto group_error = [&](const std::vector<float>& ww) {
    std::vector<float> deq = dequantize_linear(rtn_quantize(ww.data(), p.n, p.k, spec));
    double total = 0;
    for (int64_t n = 0; n < p.n; ++n)
      for (int64_t g = 0; g < p.k / 32; ++g)
        for (int64_t i = g * 32; i < g * 32 + 32; ++i)
          for (int64_t j = g * 32; j < g * 32 + 32; ++j)
            total += (p.w[n * p.k + i] - deq[n * p.k + i]) * gram[i * p.k + j] * (p.w[n * p.k + j] - deq[n * p.k + j]);
    return total;
  };
  const double before = group_error(w);
  const double after = awq_clip(w.data(), p.n, p.k, spec, gram, AwqOptions{});
  EXPECT_LT(after, before);
  EXPECT_NEAR(group_error(w), after, 1e-3 * after);
  for (size_t i = 0; i < w.size(); ++i) ASSERT_LE(std::fabs(w[i]), std::fabs(p.w[i]) + 1e-7f);
}

TEST(ModuleRules, ParsesValues) {
  auto keep = parse_module_rule("lm_head=fp16");
  ASSERT_TRUE(keep.is_ok());
  EXPECT_TRUE(keep->keep);
  auto w8 = parse_module_rule("model.layers.{0-1}.mlp.down_proj=w8");
  ASSERT_TRUE(w8.is_ok()) << w8.status().message();
  EXPECT_EQ(w8->bits, 8);
  EXPECT_EQ(*w8->group, 0);
  auto g64 = parse_module_rule("*.o_proj=w3g64-sym");
  ASSERT_TRUE(g64.is_ok()) << g64.status().message();
  EXPECT_EQ(g64->bits, 3);
  EXPECT_EQ(*g64->group, 64);
  EXPECT_TRUE(*g64->symmetric);
  auto bare = parse_module_rule("*.q_proj=8");
  ASSERT_TRUE(bare.is_ok());
  EXPECT_EQ(bare->bits, 8);
  EXPECT_FALSE(bare->group.has_value());
  EXPECT_EQ(parse_module_rule("*.q_proj=w5").status().code(), StatusCode::kUnsupported);
  EXPECT_EQ(parse_module_rule("*.q_proj").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(parse_module_rule("x=w4q").status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(parse_module_rule("x=w4-foo").status().message().find("-sym or -asym"), std::string::npos);
}

TEST(ModuleRules, PatternsMatchModuleNames) {
  EXPECT_TRUE(module_pattern_matches("model.layers.{0-3}.mlp.down_proj", "model.layers.2.mlp.down_proj"));
  EXPECT_TRUE(module_pattern_matches("model.layers.{0-12}.mlp.down_proj", "model.layers.12.mlp.down_proj"));
  EXPECT_FALSE(module_pattern_matches("model.layers.{0-3}.mlp.down_proj", "model.layers.13.mlp.down_proj"));
  EXPECT_FALSE(module_pattern_matches("model.layers.{0-3}.mlp.down_proj", "model.layers.4.mlp.down_proj"));
  EXPECT_TRUE(module_pattern_matches("*.o_proj", "model.layers.7.self_attn.o_proj"));
  EXPECT_FALSE(module_pattern_matches("*.o_proj", "model.layers.7.self_attn.q_proj"));
  EXPECT_TRUE(module_pattern_matches("model.layers.?.self_attn.*", "model.layers.3.self_attn.k_proj"));
  EXPECT_FALSE(module_pattern_matches("model.layers.?.self_attn.*", "model.layers.13.self_attn.k_proj"));
  EXPECT_TRUE(module_pattern_matches("lm_head", "lm_head"));
}

TEST(ModuleRules, LastMatchingRuleWinsAndLmHeadStaysUnlessNamed) {
  std::vector<ModuleRule> rules;
  for (const char* t : {"*.down_proj=w8", "model.layers.{5-7}.mlp.down_proj=fp16", "*.q_proj=w3g64"})
    rules.push_back(std::move(parse_module_rule(t)).value());
  const QuantSpec def{4, 128, false};
  auto down0 = spec_for_module("model.layers.0.mlp.down_proj", def, rules, false);
  ASSERT_TRUE(down0);
  EXPECT_EQ(down0->bits, 8);
  EXPECT_EQ(down0->group_size, 0);
  EXPECT_FALSE(spec_for_module("model.layers.6.mlp.down_proj", def, rules, false));
  auto q = spec_for_module("model.layers.6.self_attn.q_proj", def, rules, false);
  ASSERT_TRUE(q);
  EXPECT_EQ(q->bits, 3);
  EXPECT_EQ(q->group_size, 64);
  auto up = spec_for_module("model.layers.6.mlp.up_proj", def, rules, false);
  ASSERT_TRUE(up);
  EXPECT_EQ(up->bits, 4);
  EXPECT_FALSE(spec_for_module("lm_head", def, rules, true));
  rules.push_back(std::move(parse_module_rule("lm_head=w8")).value());
  auto head = spec_for_module("lm_head", def, rules, true);
  ASSERT_TRUE(head);
  EXPECT_EQ(head->bits, 8);
}

}  // namespace
}  // namespace compactor
