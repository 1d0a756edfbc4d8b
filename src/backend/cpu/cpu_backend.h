// The CPU backend: f32 activations, weights in any dense format, KV caches in f32/f16/bf16.
// Row-parallel ops use OpenMP; matmul (cpu_matmul.h) uses SIMD GEMV or OpenBLAS sgemm; attention
// is in cpu_attention.h. Every op has a scalar reference in ops_ref.h that is its spec.
// Test: build/tests/test_cpu_ops.
#pragma once

#include <string>

#include "backend/backend.h"

namespace compactor {

class CpuBackend final : public Backend {
 public:
  Device device() const override { return Device::kCpu; }
  std::string name() const override { return "cpu"; }
  DType activation_dtype() const override { return DType::kF32; }

  Tensor alloc(Shape shape, DType dtype) override;
  void copy_to_host(View src, void* dst) override;
  void copy_from_host(const void* src, View dst) override;
  void synchronize() override {}
  void copy(View dst, View src) override;

  void embedding(View out, const int32_t* ids, View table) override;
  void rms_norm(View out, View x, View weight, float eps) override;
  void add_rms_norm(View out, View residual, View delta, View weight, float eps) override;
  void add(View x, View delta) override;
  void matmul(View out, View x, const LinearWeight& w) override;
  void rope(View x, int n_heads, int head_dim, const float* inv_freq, const BatchLayout& layout) override;
  void kv_store(View k_cache, View v_cache, View k, View v, const BatchLayout& layout) override;
  void attention(View out, View q, View k_cache, View v_cache, const AttentionParams& p,
                 const BatchLayout& layout) override;
  void swiglu(View out, View gate, View up) override;
  void cross_entropy(float* nll, View logits, const int32_t* targets) override;
};

}  // namespace compactor
