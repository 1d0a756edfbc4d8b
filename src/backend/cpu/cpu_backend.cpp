// CpuBackend: memory ops and the row-wise ops (embedding, norms, rope, kv_store, swiglu, cross
// entropy), OpenMP over rows; matmul and attention delegate to cpu_matmul / cpu_attention.
// Test: build/tests/test_cpu_ops.
#include "backend/cpu/cpu_backend.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "backend/cpu/cpu_attention.h"
#include "backend/cpu/cpu_matmul.h"
#include "backend/cpu/cpu_qmatmul.h"
#include "backend/cpu/op_checks.h"

namespace compactor {

namespace {

constexpr int64_t kParallelMinElems = int64_t{1} << 14;  // below this, starting threads costs more

void check_f32(const char* op, const char* name, View v) {
  COMPACTOR_ASSERT(v.dtype == DType::kF32 && v.device == Device::kCpu, "{} (cpu): {} is {} on {}, expected f32 on cpu",
                   op, name, dtype_name(v.dtype), device_name(v.device));
}

std::vector<float> to_f32(View v) {
  std::vector<float> out(v.numel());
  convert_to_f32(v.data, v.dtype, v.numel(), out.data());
  return out;
}

// out: [d] = x: [d] / sqrt(mean(x²) + eps) * w: [d]
void rms_norm_row(float* out, const float* x, const float* w, int64_t d, float eps) {
  double ss = 0;
#pragma omp simd reduction(+ : ss)
  for (int64_t i = 0; i < d; ++i) ss += double(x[i]) * x[i];
  const float inv = static_cast<float>(1.0 / std::sqrt(ss / d + eps));
#pragma omp simd
  for (int64_t i = 0; i < d; ++i) out[i] = x[i] * inv * w[i];
}

// Rotates every head of one row: x: [n_heads*head_dim]; cos/sin: [head_dim/2]
void rope_row(float* x, int n_heads, int head_dim, const float* cos, const float* sin) {
  const int half = head_dim / 2;
  for (int h = 0; h < n_heads; ++h) {
    float* xh = x + int64_t{h} * head_dim;
#pragma omp simd
    for (int i = 0; i < half; ++i) {
      const float x0 = xh[i], x1 = xh[i + half];
      xh[i] = x0 * cos[i] - x1 * sin[i];
      xh[i + half] = x1 * cos[i] + x0 * sin[i];
    }
  }
}

// -log_softmax(logits)[target] of one row: logits: [v]
float nll_row(const float* logits, int64_t v, int32_t target) {
  float max_logit = -INFINITY;
  for (int64_t i = 0; i < v; ++i) max_logit = std::max(max_logit, logits[i]);
  double sum = 0;
  for (int64_t i = 0; i < v; ++i) sum += std::exp(double(logits[i]) - max_logit);
  return static_cast<float>(max_logit + std::log(sum) - logits[target]);
}

}  // namespace

Tensor CpuBackend::alloc(Shape shape, DType dtype) { return Tensor::empty(shape, dtype, Device::kCpu); }

void CpuBackend::copy_to_host(View src, void* dst) {
  COMPACTOR_ASSERT(src.device == Device::kCpu, "copy_to_host (cpu): source is on {}", device_name(src.device));
  std::memcpy(dst, src.data, src.bytes());
}

void CpuBackend::copy_from_host(const void* src, View dst) {
  COMPACTOR_ASSERT(dst.device == Device::kCpu, "copy_from_host (cpu): destination is on {}", device_name(dst.device));
  std::memcpy(dst.data, src, dst.bytes());
}

void CpuBackend::copy(View dst, View src) {
  COMPACTOR_ASSERT(dst.shape == src.shape && dst.dtype == src.dtype, "copy (cpu): {} {} -> {} {}", src.shape.str(),
                   dtype_name(src.dtype), dst.shape.str(), dtype_name(dst.dtype));
  std::memcpy(dst.data, src.data, src.bytes());
}

void CpuBackend::embedding(View out, const int32_t* ids, View table) {
  check_embedding(out, table);
  check_f32("embedding", "out", out);
  const int64_t d = out.cols(), rows = out.rows(), vocab = table.rows();
  const auto* base = static_cast<const uint8_t*>(table.data);
  for (int64_t t = 0; t < rows; ++t)
    COMPACTOR_ASSERT(ids[t] >= 0 && ids[t] < vocab, "embedding: id {} of row {} outside [0, {})", ids[t], t, vocab);
#pragma omp parallel for schedule(static) if (rows * d >= kParallelMinElems)
  for (int64_t t = 0; t < rows; ++t)
    convert_to_f32(base + ids[t] * d * dtype_size(table.dtype), table.dtype, d, out.as<float>() + t * d);
}

void CpuBackend::rms_norm(View out, View x, View weight, float eps) {
  const int64_t d = check_rms_norm("rms_norm", out, x, weight);
  check_f32("rms_norm", "out", out);
  check_f32("rms_norm", "x", x);
  const std::vector<float> w = to_f32(weight);
  const int64_t rows = x.rows();
#pragma omp parallel for schedule(static) if (rows * d >= kParallelMinElems)
  for (int64_t r = 0; r < rows; ++r) rms_norm_row(out.as<float>() + r * d, x.as<const float>() + r * d, w.data(), d, eps);
}

void CpuBackend::add_rms_norm(View out, View residual, View delta, View weight, float eps) {
  const int64_t d = check_rms_norm("add_rms_norm", out, residual, weight);
  check_same_shape("add_rms_norm", residual, delta);
  check_f32("add_rms_norm", "out", out);
  check_f32("add_rms_norm", "residual", residual);
  check_f32("add_rms_norm", "delta", delta);
  const std::vector<float> w = to_f32(weight);
  const int64_t rows = residual.rows();
#pragma omp parallel for schedule(static) if (rows * d >= kParallelMinElems)
  for (int64_t r = 0; r < rows; ++r) {
    float* res = residual.as<float>() + r * d;
    const float* del = delta.as<const float>() + r * d;
#pragma omp simd
    for (int64_t i = 0; i < d; ++i) res[i] += del[i];
    rms_norm_row(out.as<float>() + r * d, res, w.data(), d, eps);
  }
}

void CpuBackend::add(View x, View delta) {
  check_same_shape("add", x, delta);
  check_f32("add", "x", x);
  check_f32("add", "delta", delta);
  const int64_t n = x.numel();
  float* xp = x.as<float>();
  const float* dp = delta.as<const float>();
#pragma omp parallel for simd schedule(static) if (n >= kParallelMinElems)
  for (int64_t i = 0; i < n; ++i) xp[i] += dp[i];
}

void CpuBackend::matmul(View out, View x, const LinearWeight& w) {
  if (w.quantized()) {
    matmul_quantized_cpu(out, x, w);
  } else {
    matmul_cpu(out, x, w);
  }
}

void CpuBackend::rope(View x, int n_heads, int head_dim, const float* inv_freq, const BatchLayout& layout) {
  check_rope(x, n_heads, head_dim, layout);
  check_f32("rope", "x", x);
  const int half = head_dim / 2;
  const int64_t rows = x.rows(), width = x.cols();
#pragma omp parallel if (rows * width >= kParallelMinElems)
  {
    std::vector<float> cos(half), sin(half);
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const float pos = static_cast<float>(layout.past(static_cast<int>(r / layout.tokens)) + r % layout.tokens);
      for (int i = 0; i < half; ++i) {
        const float angle = pos * inv_freq[i];  // an f32 product, as HF computes it
        cos[i] = static_cast<float>(std::cos(double(angle)));
        sin[i] = static_cast<float>(std::sin(double(angle)));
      }
      rope_row(x.as<float>() + r * width, n_heads, head_dim, cos.data(), sin.data());
    }
  }
}

void CpuBackend::kv_store(View k_cache, View v_cache, View k, View v, const BatchLayout& layout) {
  check_kv_store(k_cache, v_cache, k, v, layout);
  check_f32("kv_store", "k", k);
  check_f32("kv_store", "v", v);
  const int64_t width = k.cols(), s_max = k_cache.shape[1], rows = k.rows();
  const int64_t k_elem = dtype_size(k_cache.dtype), v_elem = dtype_size(v_cache.dtype);
#pragma omp parallel for schedule(static) if (rows * width >= kParallelMinElems)
  for (int64_t r = 0; r < rows; ++r) {
    const int b = static_cast<int>(r / layout.tokens);
    const int64_t dst = (int64_t{b} * s_max + layout.past(b) + r % layout.tokens) * width;
    convert_from_f32(k.as<const float>() + r * width, width, k_cache.dtype,
                     static_cast<uint8_t*>(k_cache.data) + dst * k_elem);
    convert_from_f32(v.as<const float>() + r * width, width, v_cache.dtype,
                     static_cast<uint8_t*>(v_cache.data) + dst * v_elem);
  }
}

void CpuBackend::attention(View out, View q, View k_cache, View v_cache, const AttentionParams& p,
                           const BatchLayout& layout) {
  attention_cpu(out, q, k_cache, v_cache, p, layout);
}

void CpuBackend::swiglu(View out, View gate, View up) {
  check_swiglu(out, gate, up);
  check_f32("swiglu", "out", out);
  check_f32("swiglu", "gate", gate);
  check_f32("swiglu", "up", up);
  const int64_t n = out.numel();
  float* o = out.as<float>();
  const float *g = gate.as<const float>(), *u = up.as<const float>();
#pragma omp parallel for schedule(static) if (n >= kParallelMinElems)
  for (int64_t i = 0; i < n; ++i) o[i] = g[i] / (1.f + std::exp(-g[i])) * u[i];
}

void CpuBackend::cross_entropy(float* nll, View logits, const int32_t* targets) {
  check_cross_entropy(logits, targets);
  check_f32("cross_entropy", "logits", logits);
  const int64_t rows = logits.rows(), v = logits.cols();
#pragma omp parallel for schedule(static) if (rows * v >= kParallelMinElems)
  for (int64_t t = 0; t < rows; ++t) nll[t] = nll_row(logits.as<const float>() + t * v, v, targets[t]);
}

}  // namespace compactor
