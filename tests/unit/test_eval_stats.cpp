// Statistics of evaluation scores: mean/stderr (lm-eval's sample stddev / sqrt(n)), quantiles
// (numpy's linear interpolation), bootstrap intervals (reproducible, containing the mean, close to
// the normal interval on a large sample), paired differences and stratified macro averages.
// Run: build-*/tests/test_eval_stats
#include <gtest/gtest.h>

#include <cmath>

#include "eval/stats.h"

namespace compactor {
namespace {

TEST(Stats, MeanStderrQuantile) {
  const std::vector<double> x = {1, 0, 1, 1, 0};
  EXPECT_DOUBLE_EQ(mean(x), 0.6);
  // sample variance = (3 * 0.16 + 2 * 0.36) / 4 = 0.3
  EXPECT_NEAR(sample_stddev(x), std::sqrt(0.3), 1e-12);
  EXPECT_NEAR(mean_stderr(x), std::sqrt(0.3 / 5), 1e-12);
  EXPECT_TRUE(std::isnan(mean_stderr(std::vector<double>{1.0})));
  EXPECT_DOUBLE_EQ(quantile({3, 1, 2, 4}, 0.5), 2.5);
  EXPECT_DOUBLE_EQ(quantile({0, 10}, 0.99), 9.9);
  EXPECT_DOUBLE_EQ(quantile({5}, 0.3), 5);
}

TEST(Stats, BootstrapIsReproducibleAndSensible) {
  std::vector<double> x;
  SplitMix64 rng(42);
  for (int i = 0; i < 2000; ++i) x.push_back(rng.below(100) < 30 ? 1.0 : 0.0);
  const Estimate a = estimate_mean(x, {1000, 5}), b = estimate_mean(x, {1000, 5}), c = estimate_mean(x, {1000, 6});
  EXPECT_EQ(a.ci_low, b.ci_low);
  EXPECT_EQ(a.ci_high, b.ci_high);
  EXPECT_NE(a.ci_low + a.ci_high, c.ci_low + c.ci_high);
  EXPECT_LT(a.ci_low, a.value);
  EXPECT_GT(a.ci_high, a.value);
  // The percentile interval of a mean of 2000 Bernoulli draws is close to ±1.96 stderr.
  EXPECT_NEAR(a.ci_high - a.ci_low, 2 * 1.96 * a.stderr_, 0.15 * 2 * 1.96 * a.stderr_);
  EXPECT_EQ(a.n, 2000);
  const Estimate constant = estimate_mean(std::vector<double>(10, 1.0));
  EXPECT_EQ(constant.ci_low, 1.0);
  EXPECT_EQ(constant.ci_high, 1.0);
  EXPECT_TRUE(std::isnan(estimate_mean(std::vector<double>{}).value));
}

TEST(Stats, PairedDifferenceUsesThePairing) {
  // b = a with 10 of 200 items flipped from 1 to 0: the difference is exactly 0.05, and its paired
  // interval is far narrower than two independent intervals would suggest.
  std::vector<double> a(200), b(200);
  for (int i = 0; i < 200; ++i) a[i] = b[i] = (i % 2 == 0) ? 1.0 : 0.0;
  for (int i = 0; i < 20; i += 2) b[i] = 0.0;
  const Estimate d = estimate_paired_difference(a, b);
  EXPECT_NEAR(d.value, 0.05, 1e-12);
  EXPECT_GT(d.ci_low, 0.0);
  EXPECT_LT(d.stderr_, estimate_mean(a).stderr_);
  const Estimate zero = estimate_paired_difference(a, a);
  EXPECT_EQ(zero.value, 0.0);
  EXPECT_EQ(zero.ci_low, 0.0);
  EXPECT_EQ(zero.ci_high, 0.0);
}

TEST(Stats, MacroMeanWeighsGroupsEqually) {
  const std::vector<std::vector<double>> groups = {{1, 1, 1, 1}, {0, 0}, {}};
  const Estimate m = estimate_macro_mean(groups);
  EXPECT_DOUBLE_EQ(m.value, 0.5);  // micro would be 4/6
  EXPECT_EQ(m.n, 6);
  EXPECT_EQ(m.ci_low, 0.5);  // constant within groups: the stratified bootstrap cannot move
  EXPECT_EQ(m.ci_high, 0.5);
  const std::vector<std::vector<double>> g2 = {{1, 0, 1, 0}, {1, 1}};
  const Estimate s = estimate_macro_mean(g2);
  EXPECT_DOUBLE_EQ(s.value, 0.75);
  EXPECT_NEAR(s.stderr_, std::sqrt(1.0 / 3.0 / 4.0) / 2.0, 1e-12);  // sqrt(se1^2 + 0) / 2
  const Estimate d = estimate_macro_paired_difference(g2, {{0, 0, 1, 0}, {1, 1}});
  EXPECT_DOUBLE_EQ(d.value, 0.125);
}

TEST(Stats, SplitMixBelowIsUniformEnough) {
  SplitMix64 rng(1);
  std::vector<int> counts(7, 0);
  for (int i = 0; i < 70000; ++i) ++counts[rng.below(7)];
  for (int c : counts) EXPECT_NEAR(c, 10000, 500);
}

}  // namespace
}  // namespace compactor
