#include "compress/hessian.h"

#include <cblas.h>

#include <cmath>

#include "core/status.h"

namespace compactor {

void InputStats::add(const float* x, int64_t rows) {
  COMPACTOR_ASSERT(device_ == nullptr, "InputStats::add: host rows into GPU statistics");
  if (rows <= 0) return;
  // Row-major XᵀX fills the upper triangle in BLAS's column-major view, i.e. our lower one.
  cblas_ssyrk(CblasRowMajor, CblasLower, CblasTrans, static_cast<int>(k_), static_cast<int>(rows), 1.f, x,
              static_cast<int>(k_), 1.f, gram_.data(), static_cast<int>(k_));
  for (int64_t t = 0; t < rows; ++t)
    for (int64_t k = 0; k < k_; ++k) abs_sum_[k] += std::fabs(x[t * k_ + k]);
  tokens_ += rows;
  mirrored_ = false;
}

const std::vector<float>& InputStats::gram() {
  if (device_ != nullptr && gram_.empty()) download();
  if (!mirrored_) {
    for (int64_t i = 0; i < k_; ++i)
      for (int64_t j = i + 1; j < k_; ++j) gram_[i * k_ + j] = gram_[j * k_ + i];
    mirrored_ = true;
  }
  return gram_;
}

std::vector<float> InputStats::hessian() {
  std::vector<float> h = gram();
  const float s = tokens_ > 0 ? 2.f / static_cast<float>(tokens_) : 0.f;
  for (float& v : h) v *= s;
  return h;
}

std::vector<float> InputStats::mean_abs() const {
  std::vector<float> m(k_, 0.f);
  if (tokens_ == 0) return m;
  if (device_ != nullptr && abs_sum_.empty()) const_cast<InputStats*>(this)->download();
  for (int64_t k = 0; k < k_; ++k) m[k] = static_cast<float>(abs_sum_[k] / static_cast<double>(tokens_));
  return m;
}

double quadratic_error(const float* a, const float* b, int64_t n_out, int64_t k_in, const float* g) {
  std::vector<float> d(a, a + n_out * k_in);
  if (b != nullptr)
    for (int64_t i = 0; i < n_out * k_in; ++i) d[i] -= b[i];
  std::vector<float> dg(n_out * k_in);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(n_out), static_cast<int>(k_in),
              static_cast<int>(k_in), 1.f, d.data(), static_cast<int>(k_in), g, static_cast<int>(k_in), 0.f, dg.data(),
              static_cast<int>(k_in));
  double total = 0;
  for (int64_t i = 0; i < n_out * k_in; ++i) total += static_cast<double>(d[i]) * dg[i];
  return total;
}

double relative_output_error(const float* w, const float* w_hat, int64_t n_out, int64_t k_in, const float* g) {
  const double base = quadratic_error(w, nullptr, n_out, k_in, g);
  if (base <= 0) return 0.0;
  return quadratic_error(w, w_hat, n_out, k_in, g) / base;
}

}  // namespace compactor
