#include "compress/obs_solver.h"

#include <cblas.h>
#include <lapacke.h>

#include <algorithm>
#include <cmath>
#include <numeric>

namespace compactor {

namespace {

// Dead inputs (never active): H_ii = 1 so the factorization exists, and their weights are zeroed
// (they never reach the output, as in gptq.py).
int64_t fix_dead_columns(std::vector<float>& h, float* w, int64_t n_out, int64_t k_in) {
  int64_t dead = 0;
  for (int64_t i = 0; i < k_in; ++i) {
    if (h[i * k_in + i] != 0.f) continue;
    ++dead;
    h[i * k_in + i] = 1.f;
    for (int64_t n = 0; n < n_out; ++n) w[n * k_in + i] = 0.f;
  }
  return dead;
}

std::vector<float> permuted(const std::vector<float>& h, int64_t k, const std::vector<int32_t>& perm) {
  std::vector<float> out(k * k);
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = 0; j < k; ++j) out[i * k + j] = h[static_cast<int64_t>(perm[i]) * k + perm[j]];
  return out;
}

// Upper Cholesky factor of H⁻¹ into `u` ([K, K], upper triangle used). False when H is not
// positive definite.
bool inverse_cholesky_upper(const std::vector<float>& h, int64_t k, std::vector<float>& u) {
  u = h;
  const int n = static_cast<int>(k);
  if (LAPACKE_spotrf(LAPACK_ROW_MAJOR, 'L', n, u.data(), n) != 0) return false;
  if (LAPACKE_spotri(LAPACK_ROW_MAJOR, 'L', n, u.data(), n) != 0) return false;
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = i + 1; j < k; ++j) u[i * k + j] = u[j * k + i];
  if (LAPACKE_spotrf(LAPACK_ROW_MAJOR, 'U', n, u.data(), n) != 0) return false;
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = 0; j < i; ++j) u[i * k + j] = 0.f;
  return true;
}

// Damps H and factors its inverse, raising the damping tenfold while the factorization fails
// (H built from few tokens is only positive semi-definite, and float rounding can tip it over).
Result<ObsStats> damped_inverse_factor(std::vector<float>& h, int64_t k, float percdamp, std::vector<float>& u,
                                       const std::string& module) {
  ObsStats stats;
  double mean_diag = 0;
  for (int64_t i = 0; i < k; ++i) mean_diag += h[i * k + i];
  mean_diag /= static_cast<double>(k);
  if (!std::isfinite(mean_diag))
    return invalid_argument("{}: the calibration inputs contain NaN or Inf (Hessian diagonal mean {})", module,
                            mean_diag);
  float added = 0.f;
  float damp = static_cast<float>(std::max(percdamp, 1e-6f) * mean_diag);
  for (int attempt = 0; attempt <= 6; ++attempt, damp *= 10.f) {
    for (int64_t i = 0; i < k; ++i) h[i * k + i] += damp - added;
    added = damp;
    if (inverse_cholesky_upper(h, k, u)) {
      stats.damp = damp;
      stats.damp_retries = attempt;
      return stats;
    }
  }
  return invalid_argument("{}: the Hessian is not positive definite even with damping {} (inputs degenerate?)",
                          module, damp);
}

void sweep_block(float* wt, int64_t n_out, int64_t k_in, const std::vector<float>& u, int64_t i1, int64_t i2,
                 ObsColumnPolicy& policy, std::vector<float>& err) {
  std::vector<float> orig(n_out);
  policy.begin_block(i1, i2 - i1, wt);
  for (int64_t p = i1; p < i2; ++p) {
    float* w = wt + p * n_out;
    std::copy(w, w + n_out, orig.begin());
    policy.decide(p, w, wt);
    const float d = u[p * k_in + p];
    float* e = err.data() + (p - i1) * n_out;
    for (int64_t n = 0; n < n_out; ++n) e[n] = (orig[n] - w[n]) / d;
    for (int64_t j = p + 1; j < i2; ++j) {
      const float c = u[p * k_in + j];
      float* row = wt + j * n_out;
      for (int64_t n = 0; n < n_out; ++n) row[n] -= c * e[n];
    }
  }
  if (i2 < k_in)
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, static_cast<int>(k_in - i2), static_cast<int>(n_out),
                static_cast<int>(i2 - i1), -1.f, u.data() + i1 * k_in + i2, static_cast<int>(k_in), err.data(),
                static_cast<int>(n_out), 1.f, wt + i2 * n_out, static_cast<int>(n_out));
}

}  // namespace

std::vector<int32_t> obs_column_order(const std::vector<float>& h, int64_t k, bool act_order) {
  std::vector<int32_t> perm(k);
  std::iota(perm.begin(), perm.end(), 0);
  if (!act_order) return perm;
  auto diag = [&](int32_t i) {
    const float v = h[static_cast<int64_t>(i) * k + i];
    return v == 0.f ? 1.f : v;
  };
  std::stable_sort(perm.begin(), perm.end(), [&](int32_t a, int32_t b) { return diag(a) > diag(b); });
  return perm;
}

Result<ObsStats> obs_sweep(float* w, int64_t n_out, int64_t k_in, std::vector<float> h,
                           const std::vector<int32_t>& perm, const ObsOptions& opts, ObsColumnPolicy& policy,
                           const std::string& module) {
  COMPACTOR_ASSERT(static_cast<int64_t>(h.size()) == k_in * k_in && static_cast<int64_t>(perm.size()) == k_in,
                   "obs_sweep: H has {} entries and perm {} for K = {}", h.size(), perm.size(), k_in);
  const int64_t dead = fix_dead_columns(h, w, n_out, k_in);
  std::vector<float> hp = permuted(h, k_in, perm);
  h.clear();
  std::vector<float> u;
  ASSIGN_OR_RETURN(ObsStats stats, damped_inverse_factor(hp, k_in, opts.percdamp, u, module));
  stats.dead_columns = dead;
  hp.clear();

  std::vector<float> wt(k_in * n_out);
  for (int64_t p = 0; p < k_in; ++p)
    for (int64_t n = 0; n < n_out; ++n) wt[p * n_out + n] = w[n * k_in + perm[p]];
  const int64_t bs = std::max(1, opts.block_size);
  std::vector<float> err(bs * n_out);
  for (int64_t i1 = 0; i1 < k_in; i1 += bs) sweep_block(wt.data(), n_out, k_in, u, i1, std::min(k_in, i1 + bs), policy, err);
  for (int64_t p = 0; p < k_in; ++p)
    for (int64_t n = 0; n < n_out; ++n) w[n * k_in + perm[p]] = wt[p * n_out + n];
  return stats;
}

}  // namespace compactor
