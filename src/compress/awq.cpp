#include "compress/awq.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "compress/hessian.h"
#include "compress/quant_grid.h"

namespace compactor {

namespace {

// Mean over the group's output rows of |w| relative to its quantization group's max |w|: [K].
std::vector<float> relative_weight_mean(const std::vector<AwqLinear>& group, int64_t k_in) {
  std::vector<double> sum(k_in, 0.0);
  int64_t rows = 0;
  for (const AwqLinear& l : group) {
    const int64_t gs = l.spec.group_size == 0 ? k_in : l.spec.group_size;
    for (int64_t n = 0; n < l.out_features; ++n, ++rows)
      for (int64_t g0 = 0; g0 < k_in; g0 += gs) {
        const float* w = l.w + n * k_in + g0;
        float mx = 0.f;
        for (int64_t i = 0; i < gs; ++i) mx = std::max(mx, std::fabs(w[i]));
        for (int64_t i = 0; i < gs; ++i) sum[g0 + i] += std::fabs(w[i]) / (mx + 1e-6f);
      }
  }
  std::vector<float> mean(k_in);
  for (int64_t k = 0; k < k_in; ++k) mean[k] = static_cast<float>(sum[k] / static_cast<double>(std::max<int64_t>(rows, 1)));
  return mean;
}

std::vector<float> candidate_scales(const std::vector<float>& mean_abs, const std::vector<float>* w_mean, float alpha) {
  std::vector<float> s(mean_abs.size());
  for (size_t k = 0; k < s.size(); ++k) {
    float v = std::pow(std::max(mean_abs[k], 0.f), alpha);
    if (w_mean != nullptr) v /= std::pow((*w_mean)[k], 1.f - alpha) + 1e-4f;
    s[k] = std::max(v, 1e-4f);
  }
  const auto [lo, hi] = std::minmax_element(s.begin(), s.end());
  const float norm = std::sqrt(*lo * *hi);
  for (float& v : s) v /= norm;
  return s;
}

// Output error of one linear when quantized after scaling its input columns by s.
double scaled_rtn_error(const AwqLinear& l, int64_t k_in, const std::vector<float>& s, const std::vector<float>& gram) {
  std::vector<float> ws(l.w, l.w + l.out_features * k_in);
  scale_columns(ws.data(), l.out_features, k_in, s);
  std::vector<float> deq = dequantize_linear(rtn_quantize(ws.data(), l.out_features, k_in, l.spec));
  for (int64_t n = 0; n < l.out_features; ++n)
    for (int64_t k = 0; k < k_in; ++k) deq[n * k_in + k] /= s[k];
  return quadratic_error(l.w, deq.data(), l.out_features, k_in, gram.data());
}

// d = w − Q(clamp(w, −m, m)) for one group, and dᵀ G d with G the group's diagonal block.
double clipped_group_error(const float* w, int64_t len, float m, const QuantSpec& spec, const float* g, int64_t ld,
                           std::vector<float>& d) {
  float lo = std::numeric_limits<float>::max(), hi = -lo;
  for (int64_t i = 0; i < len; ++i) {
    const float c = std::clamp(w[i], -m, m);
    lo = std::min(lo, c);
    hi = std::max(hi, c);
  }
  const QParams p = qparams_from_range(lo, hi, spec);
  const int max_code = quant_max_code(spec.bits);
  for (int64_t i = 0; i < len; ++i) d[i] = w[i] - dequantize_code(quantize_code(std::clamp(w[i], -m, m), p, max_code), p);
  double total = 0;
  for (int64_t i = 0; i < len; ++i) {
    float row = 0.f;
    const float* gi = g + i * ld;
#pragma omp simd reduction(+ : row)
    for (int64_t j = 0; j < len; ++j) row += gi[j] * d[j];
    total += static_cast<double>(d[i]) * row;
  }
  return total;
}

}  // namespace

AwqScaleResult awq_search_scales(const std::vector<AwqLinear>& group, int64_t k_in, const std::vector<float>& mean_abs,
                                 const std::vector<float>& gram, const AwqOptions& opts) {
  AwqScaleResult best;
  best.loss = std::numeric_limits<double>::infinity();
  std::vector<float> w_mean;
  if (opts.duo_scaling) w_mean = relative_weight_mean(group, k_in);
  for (int i = 0; i < std::max(1, opts.grid); ++i) {
    const float alpha = static_cast<float>(i) / static_cast<float>(std::max(1, opts.grid));
    std::vector<float> s = alpha == 0.f ? std::vector<float>(k_in, 1.f)
                                          : candidate_scales(mean_abs, opts.duo_scaling ? &w_mean : nullptr, alpha);
    double loss = 0;
    for (const AwqLinear& l : group) loss += scaled_rtn_error(l, k_in, s, gram);
    if (i == 0) best.rtn_loss = loss;
    if (loss < best.loss) {
      best.loss = loss;
      best.alpha = alpha;
      best.scales = std::move(s);
    }
  }
  return best;
}

double awq_clip(float* w, int64_t n_out, int64_t k_in, const QuantSpec& spec, const std::vector<float>& gram,
                const AwqOptions& opts) {
  const int64_t gs = spec.group_size == 0 ? k_in : spec.group_size;
  const int64_t groups = k_in / gs;
  const int steps = std::max(1, static_cast<int>(opts.max_shrink * static_cast<float>(opts.clip_grid)));
  double total = 0;
#pragma omp parallel for schedule(dynamic) reduction(+ : total)
  for (int64_t n = 0; n < n_out; ++n) {
    std::vector<float> d(gs);
    for (int64_t g = 0; g < groups; ++g) {
      float* wg = w + n * k_in + g * gs;
      const float* gg = gram.data() + g * gs * k_in + g * gs;
      float org = 0.f;
      for (int64_t i = 0; i < gs; ++i) org = std::max(org, std::fabs(wg[i]));
      float best_m = org;
      double best = clipped_group_error(wg, gs, org, spec, gg, k_in, d);
      for (int s = 1; s < steps; ++s) {
        const float m = org * (1.f - static_cast<float>(s) / static_cast<float>(opts.clip_grid));
        const double e = clipped_group_error(wg, gs, m, spec, gg, k_in, d);
        if (e < best) best = e, best_m = m;
      }
      for (int64_t i = 0; i < gs; ++i) wg[i] = std::clamp(wg[i], -best_m, best_m);
      total += best;
    }
  }
  return total;
}

void scale_columns(float* w, int64_t n_out, int64_t k_in, const std::vector<float>& s) {
  for (int64_t n = 0; n < n_out; ++n)
    for (int64_t k = 0; k < k_in; ++k) w[n * k_in + k] *= s[k];
}

void divide_rows(float* w, int64_t n_out, int64_t k_in, const std::vector<float>& s) {
  for (int64_t n = 0; n < n_out; ++n)
    for (int64_t k = 0; k < k_in; ++k) w[n * k_in + k] /= s[n];
}

void divide_elements(float* v, const std::vector<float>& s) {
  for (size_t i = 0; i < s.size(); ++i) v[i] /= s[i];
}

void scale_gram(std::vector<float>& g, const std::vector<float>& s) {
  const int64_t k = static_cast<int64_t>(s.size());
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = 0; j < k; ++j) g[i * k + j] /= s[i] * s[j];
}

}  // namespace compactor
