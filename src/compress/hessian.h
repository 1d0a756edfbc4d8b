// Input statistics of a linear layer gathered over calibration tokens: the Gram matrix XᵀX
// (OpenBLAS ssyrk; GPTQ's Hessian is H = 2/n · XᵀX) and mean |x| per input channel (AWQ's
// activation scale). The output error of a weight change follows from XᵀX alone:
//   ‖X·Wᵀ − X·Ŵᵀ‖² = Σ_n (w_n − ŵ_n) XᵀX (w_n − ŵ_n)ᵀ
// so no compressor has to keep the calibration activations themselves.
// On the CUDA backend the statistics can live on the GPU (on_device(): XᵀX by cuBLAS from the
// activations where the forward left them, hessian_cuda.cpp); gram()/mean_abs() then copy them to
// the host on first use, and GPU compressors read device_gram() directly (gptq_cuda.h).
// Test: build-comp/tests/test_quantizers (tests/unit/test_quantizers.cpp); GPU: test_cuda_gptq.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "backend/backend.h"

namespace compactor {

class CudaCompressContext;  // gptq_cuda.h

class InputStats {
 public:
  InputStats() = default;
  explicit InputStats(int64_t in_features) : k_(in_features), gram_(in_features * in_features, 0.f), abs_sum_(in_features, 0.0) {}

  // Statistics kept on the GPU of `ctx` (errors: allocation failure, no CUDA in this build).
  static Result<InputStats> on_device(std::shared_ptr<CudaCompressContext> ctx, int64_t in_features);

  // x: [rows, K] f32 (host). Adds rows to XᵀX (lower triangle until gram() mirrors it) and |x| sums.
  void add(const float* x, int64_t rows);
  // x: [rows, K] activations on `backend`: on the GPU for device statistics, else copied to the host.
  Status add(Backend& backend, View x);

  bool on_device() const { return device_ != nullptr; }
  // XᵀX: [K, K] f32 on the GPU (both triangles). Invariant: on_device().
  View device_gram() const;

  int64_t in_features() const { return k_; }
  int64_t tokens() const { return tokens_; }
  // XᵀX: [K, K] f32, symmetric (device statistics: copied to the host on the first call).
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
  struct DeviceState;
  std::shared_ptr<DeviceState> device_;  // set for GPU statistics
  void download();                  // device_ -> gram_, abs_sum_ (hessian_cuda.cpp)
};

// Σ_n d_n G d_nᵀ with d = a − b; a, b: [N, K] f32, g: [K, K] f32 symmetric (b may be nullptr: d = a).
double quadratic_error(const float* a, const float* b, int64_t out_features, int64_t in_features, const float* g);

// ‖(W − Ŵ)X‖² / ‖WX‖² from the Gram matrix of X (0 when ‖WX‖ = 0). w, w_hat: [N, K]; g: [K, K].
double relative_output_error(const float* w, const float* w_hat, int64_t out_features, int64_t in_features,
                             const float* g);

}  // namespace compactor
