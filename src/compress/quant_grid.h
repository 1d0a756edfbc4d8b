// The integer grid every weight quantizer shares (GPTQ's `Quantizer` in quant.py, minus the MSE
// grid): per-group min/max (zero included) -> scale and integer zero point; codes
// c = clamp(round(w / s) + z, 0, 2^bits - 1), w ≈ (c - z) · s. Symmetric: z = 2^(bits-1) and the
// range is ±max|w|. Scales are rounded to f16 when they are made, because that is what the packed
// format stores (formats/quant_pack.h): a compressor's error measurements and GPTQ's error feedback
// then see the weights the checkpoint will hold.
// RTN (round-to-nearest, the baseline every method is compared with) is rtn_quantize().
// Test: build-comp/tests/test_quantizers (tests/unit/test_quantizers.cpp).
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "formats/quant.h"

namespace compactor {

inline int quant_max_code(int bits) { return (1 << bits) - 1; }

struct QParams {
  float scale = 1.f;
  float zero = 0.f;  // integer-valued
};

// Scale and zero of a group whose values span [lo, hi] (GPTQ: the range always includes 0; an
// all-zero group gets the range [-1, 1]).
QParams qparams_from_range(float lo, float hi, const QuantSpec& spec);

inline float quantize_code(float w, QParams p, int max_code) {
  return std::fmin(std::fmax(std::nearbyint(w / p.scale) + p.zero, 0.f), static_cast<float>(max_code));
}
inline float dequantize_code(float code, QParams p) { return (code - p.zero) * p.scale; }

// Bits in {2, 3, 4, 8}, group size 0 (per-channel) or a positive divisor of in_features (GPTQ
// checkpoints and the packed kernels assume whole groups). Messages name `module`.
Status check_quant_spec(const QuantSpec& spec, int64_t in_features, const std::string& module);

// An empty QuantizedLinear of the right sizes (codes, scales, zeros allocated; g_idx empty).
QuantizedLinear make_quantized_linear(const QuantSpec& spec, int64_t out_features, int64_t in_features);

// Round-to-nearest with natural groups. w: [N, K] f32. Invariant: check_quant_spec passed.
QuantizedLinear rtn_quantize(const float* w, int64_t out_features, int64_t in_features, const QuantSpec& spec);

// out: [N, K] f32 = the weights q represents.
void dequantize_linear(const QuantizedLinear& q, float* out);
std::vector<float> dequantize_linear(const QuantizedLinear& q);

// Storage bits per weight of a linear in this spec: codes + f16 scales + packed zeros (+ i32 g_idx).
double storage_bits_per_weight(const QuantSpec& spec, int64_t out_features, int64_t in_features, bool act_order);

}  // namespace compactor
