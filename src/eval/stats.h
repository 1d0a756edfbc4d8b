// Statistics of evaluation scores: means with their standard error (lm-evaluation-harness's
// `mean_stderr`: sample standard deviation with n-1, over sqrt(n)), percentile-bootstrap 95%
// intervals (resampling items with a seeded generator, so a run is reproducible), paired
// differences between two models scored on the same items, macro averages over groups (MMLU
// subjects) with a stratified bootstrap, and quantiles.
// Test: build-*/tests/test_eval_stats.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace compactor {

struct Estimate {
  double value = 0;    // the statistic on the full sample
  double stderr_ = 0;  // NaN when n < 2 (trailing underscore: `stderr` is a macro)
  double ci_low = 0, ci_high = 0;  // 95% percentile-bootstrap interval (NaN when n == 0)
  int64_t n = 0;
};

struct BootstrapOptions {
  int iterations = 1000;
  uint64_t seed = 1234;
};

double mean(std::span<const double> x);
double sample_stddev(std::span<const double> x);  // n-1 denominator; NaN when n < 2
double mean_stderr(std::span<const double> x);    // sample_stddev / sqrt(n)
// q in [0, 1], linear interpolation between order statistics (numpy's default). Sorts a copy.
double quantile(std::vector<double> x, double q);

// The mean of per-item scores with its standard error and bootstrap interval.
Estimate estimate_mean(std::span<const double> x, const BootstrapOptions& opts = {});
// mean(a - b) over paired items (same items, same order): a.size() must equal b.size().
Estimate estimate_paired_difference(std::span<const double> a, std::span<const double> b,
                                    const BootstrapOptions& opts = {});
// The unweighted mean of the groups' means. stderr = sqrt(sum se_g^2) / G; the interval resamples
// items within each group (stratified), so each group keeps its size.
Estimate estimate_macro_mean(const std::vector<std::vector<double>>& groups, const BootstrapOptions& opts = {});
// Same for the paired difference of two models' group scores.
Estimate estimate_macro_paired_difference(const std::vector<std::vector<double>>& a,
                                          const std::vector<std::vector<double>>& b,
                                          const BootstrapOptions& opts = {});

// A small deterministic generator (SplitMix64) with an unbiased bounded draw, identical on every
// platform (std:: distributions are implementation-defined).
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t next();
  uint64_t below(uint64_t n);  // uniform in [0, n), n > 0

 private:
  uint64_t state_;
};

}  // namespace compactor
