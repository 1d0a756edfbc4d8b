// Input statistics of a linear layer gathered over calibration tokens: the Gram matrix XᵀX
// (OpenBLAS ssyrk; GPTQ's Hessian is H = 2/n · XᵀX) and mean |x| per input channel (AWQ's
// activation scale). The output error of a weight change follows from XᵀX alone:
//   ‖X·Wᵀ − X·Ŵᵀ‖² = Σ_n (w_n − ŵ_n) XᵀX (w_n − ŵ_n)ᵀ
// so no compressor has to keep the calibration activations themselves.
// Test: build-comp/tests/test_quantizers (tests/unit/test_quantizers.cpp).
#pragma once

#include <cstdint>
#include <vector>

namespace compactor {

class InputStats {
 public:
  InputStats() = default;
  explicit InputStats(int64_t in_features) : k_(in_features), gram_(in_features * in_features, 0.f), abs_sum_(in_features, 0.0) {}

  // x: [rows, K] f32 (host). Adds rows to XᵀX (lower triangle until gram() mirrors it) and |x| sums.
  void add(const float* x, int64_t rows);

  int64_t in_features() const { return k_; }
  int64_t tokens() const { return tokens_; }
  // XᵀX: [K, K] f32, symmetric.
  const std::vector<float>& gram();
  // GPTQ's Hessian 2/n · XᵀX: [K, K] f32.
  std::vector<float> hessian();
  // mean |x| per input channel: [K].
  std::vector<float> mean_abs() const;

 private:
  int64_t k_ = 0, tokens_ = 0;
  std::vector<float> gram_;
  std::vector<double> abs_sum_;
  bool mirrored_ = true;
};

// Σ_n d_n G d_nᵀ with d = a − b; a, b: [N, K] f32, g: [K, K] f32 symmetric (b may be nullptr: d = a).
double quadratic_error(const float* a, const float* b, int64_t out_features, int64_t in_features, const float* g);

// ‖(W − Ŵ)X‖² / ‖WX‖² from the Gram matrix of X (0 when ‖WX‖ = 0). w, w_hat: [N, K]; g: [K, K].
double relative_output_error(const float* w, const float* w_hat, int64_t out_features, int64_t in_features,
                             const float* g);

}  // namespace compactor
