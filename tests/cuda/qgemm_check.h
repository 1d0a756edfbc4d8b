// Reference products and tolerances shared by the fused quantized-matmul GPU tests
// (test_cuda_qgemm, test_cuda_nf4): y = x · wᵀ in double with Σ|x·w| per element, and the
// element-wise check of a device result against it.
#pragma once

#include <gtest/gtest.h>

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace compactor::test {

// x · dq(w)ᵀ in double, and Σ|x·w| per element (the scale of the f32 accumulation error).
struct Reference {
  std::vector<double> y, magnitude;  // [M, N]
};

inline Reference reference(const std::vector<float>& x, const std::vector<float>& w, int64_t m, int64_t n, int64_t k) {
  Reference r;
  r.y.assign(m * n, 0.0);
  r.magnitude.assign(m * n, 0.0);
  for (int64_t t = 0; t < m; ++t)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0, a = 0;
      const float* xr = &x[t * k];
      const float* wr = &w[j * k];
      for (int64_t i = 0; i < k; ++i) {
        const double p = static_cast<double>(xr[i]) * wr[i];
        s += p;
        a += std::fabs(p);
      }
      r.y[t * n + j] = s;
      r.magnitude[t * n + j] = a;
    }
  return r;
}

// Half an ulp of the output rounding, doubled.
inline double round_tol(DType d) { return d == DType::kBF16 ? 2.0 / 256 : 2.0 / 2048; }
// The fused kernel's f32 accumulation, relative to Σ|x·w| (generous: ~170 f32 ulps).
constexpr double kFusedCoef = 1e-5;
// Paths that may dequantize w to the activation dtype first (relative rounding error of each
// weight: 2^-9 bf16, 2^-11 f16) and round an intermediate once more (matmul_add's default).
inline double dequant_coef(DType d) { return (d == DType::kBF16 ? 1.0 / 512 : 1.0 / 2048) + kFusedCoef; }

// Every element within round_tol·|ref| + coef·Σ|x·w| (magnitude includes any added base).
inline ::testing::AssertionResult close_to(const std::vector<float>& got, const std::vector<double>& want,
                                    const std::vector<double>& magnitude, DType act, const std::string& what,
                                    double coef = kFusedCoef) {
  double max_abs = 0, max_rel = 0;
  int bad = 0;
  std::string first;
  for (size_t i = 0; i < want.size(); ++i) {
    const double err = std::fabs(static_cast<double>(got[i]) - want[i]);
    max_abs = std::max(max_abs, err);
    if (std::fabs(want[i]) > 1e-6) max_rel = std::max(max_rel, err / std::fabs(want[i]));
    const bool ok = std::isfinite(got[i]) && err <= round_tol(act) * std::fabs(want[i]) + coef * magnitude[i] + 1e-6;
    if (!ok && bad++ < 4) first += fmt::format(" [{}] = {} (want {});", i, got[i], want[i]);
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << ": " << bad << " of " << want.size()
                                       << " elements off, max abs err " << max_abs << ", max rel err " << max_rel
                                       << "; first:" << first;
}

}  // namespace compactor::test
