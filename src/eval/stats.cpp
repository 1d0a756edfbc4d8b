#include "eval/stats.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/status.h"

namespace compactor {

namespace {
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Percentile interval of the bootstrap statistics.
void fill_interval(std::vector<double> boot, Estimate& e) {
  e.ci_low = quantile(boot, 0.025);
  e.ci_high = quantile(std::move(boot), 0.975);
}

std::vector<double> differences(std::span<const double> a, std::span<const double> b) {
  COMPACTOR_ASSERT(a.size() == b.size(), "paired samples differ in size ({} vs {})", a.size(), b.size());
  std::vector<double> d(a.size());
  for (size_t i = 0; i < a.size(); ++i) d[i] = a[i] - b[i];
  return d;
}
}  // namespace

uint64_t SplitMix64::next() {
  uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t SplitMix64::below(uint64_t n) {
  // Rejection sampling: draws above the largest multiple of n would bias small values.
  const uint64_t limit = std::numeric_limits<uint64_t>::max() - std::numeric_limits<uint64_t>::max() % n;
  uint64_t r;
  do r = next();
  while (r >= limit);
  return r % n;
}

double mean(std::span<const double> x) {
  if (x.empty()) return kNaN;
  double s = 0;
  for (double v : x) s += v;
  return s / static_cast<double>(x.size());
}

double sample_stddev(std::span<const double> x) {
  if (x.size() < 2) return kNaN;
  const double m = mean(x);
  double ss = 0;
  for (double v : x) ss += (v - m) * (v - m);
  return std::sqrt(ss / static_cast<double>(x.size() - 1));
}

double mean_stderr(std::span<const double> x) {
  return x.size() < 2 ? kNaN : sample_stddev(x) / std::sqrt(static_cast<double>(x.size()));
}

double quantile(std::vector<double> x, double q) {
  if (x.empty()) return kNaN;
  std::sort(x.begin(), x.end());
  const double pos = std::clamp(q, 0.0, 1.0) * static_cast<double>(x.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(lo + 1, x.size() - 1);
  return x[lo] + (pos - static_cast<double>(lo)) * (x[hi] - x[lo]);
}

Estimate estimate_mean(std::span<const double> x, const BootstrapOptions& opts) {
  Estimate e;
  e.n = static_cast<int64_t>(x.size());
  e.value = mean(x);
  e.stderr_ = mean_stderr(x);
  if (x.empty()) {
    e.ci_low = e.ci_high = kNaN;
    return e;
  }
  SplitMix64 rng(opts.seed);
  std::vector<double> boot(std::max(1, opts.iterations));
  for (double& b : boot) {
    double s = 0;
    for (size_t i = 0; i < x.size(); ++i) s += x[rng.below(x.size())];
    b = s / static_cast<double>(x.size());
  }
  fill_interval(std::move(boot), e);
  return e;
}

Estimate estimate_paired_difference(std::span<const double> a, std::span<const double> b,
                                    const BootstrapOptions& opts) {
  const std::vector<double> d = differences(a, b);
  return estimate_mean(d, opts);
}

Estimate estimate_macro_mean(const std::vector<std::vector<double>>& groups, const BootstrapOptions& opts) {
  Estimate e;
  std::vector<double> means;
  double var = 0;
  for (const auto& g : groups) {
    e.n += static_cast<int64_t>(g.size());
    if (g.empty()) continue;
    means.push_back(mean(g));
    const double se = mean_stderr(g);
    var += std::isnan(se) ? 0.0 : se * se;
  }
  e.value = mean(means);
  e.stderr_ = means.empty() ? kNaN : std::sqrt(var) / static_cast<double>(means.size());
  if (means.empty()) {
    e.ci_low = e.ci_high = kNaN;
    return e;
  }
  SplitMix64 rng(opts.seed);
  std::vector<double> boot(std::max(1, opts.iterations));
  for (double& b : boot) {
    double total = 0;
    for (const auto& g : groups) {
      if (g.empty()) continue;
      double s = 0;
      for (size_t i = 0; i < g.size(); ++i) s += g[rng.below(g.size())];
      total += s / static_cast<double>(g.size());
    }
    b = total / static_cast<double>(means.size());
  }
  fill_interval(std::move(boot), e);
  return e;
}

Estimate estimate_macro_paired_difference(const std::vector<std::vector<double>>& a,
                                          const std::vector<std::vector<double>>& b, const BootstrapOptions& opts) {
  COMPACTOR_ASSERT(a.size() == b.size(), "paired groups differ in count ({} vs {})", a.size(), b.size());
  std::vector<std::vector<double>> d(a.size());
  for (size_t g = 0; g < a.size(); ++g) d[g] = differences(a[g], b[g]);
  return estimate_macro_mean(d, opts);
}

}  // namespace compactor
