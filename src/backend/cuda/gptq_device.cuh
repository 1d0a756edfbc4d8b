// Device copies of the host quantization grid (compress/quant_grid.h): the same float operations
// in the same order (IEEE division, round-half-even, the f16 rounding of scales), so a weight
// quantized on the GPU gets the code the CPU would give it. Only .cu files include this.
// Test: build-cuda/tests/test_cuda_gptq (on a GPU machine).
#pragma once

#include <cuda_fp16.h>

namespace compactor {

struct DeviceQParams {
  float scale;
  float zero;
};

__device__ __forceinline__ float round_scale_to_f16_device(float s) {
  constexpr float kMinF16 = 5.9604645e-8f, kMaxF16 = 65504.f;
  const float c = s < kMinF16 ? kMinF16 : (kMaxF16 < s ? kMaxF16 : s);  // std::clamp
  const float r = __half2float(__float2half_rn(c));
  return r > 0.f ? r : kMinF16;
}

// qparams_from_range of quant_grid.cpp.
__device__ __forceinline__ DeviceQParams qparams_from_range_device(float lo, float hi, int bits, bool symmetric) {
  const int max_code = (1 << bits) - 1;
  lo = fminf(lo, 0.f);
  hi = fmaxf(hi, 0.f);
  if (symmetric) {
    hi = fmaxf(-lo, hi);
    if (lo < 0.f) lo = -hi;
  }
  if (lo == 0.f && hi == 0.f) {
    lo = -1.f;
    hi = 1.f;
  }
  DeviceQParams p;
  p.scale = round_scale_to_f16_device(__fdiv_rn(hi - lo, static_cast<float>(max_code)));
  if (symmetric) {
    p.zero = static_cast<float>(1 << (bits - 1));
  } else {
    const float z = rintf(__fdiv_rn(-lo, p.scale));
    p.zero = z < 0.f ? 0.f : (static_cast<float>(max_code) < z ? static_cast<float>(max_code) : z);
  }
  return p;
}

__device__ __forceinline__ float quantize_code_device(float w, DeviceQParams p, int max_code) {
  return fminf(fmaxf(rintf(__fdiv_rn(w, p.scale)) + p.zero, 0.f), static_cast<float>(max_code));
}

__device__ __forceinline__ float dequantize_code_device(float code, DeviceQParams p) {
  return __fmul_rn(code - p.zero, p.scale);
}

}  // namespace compactor
