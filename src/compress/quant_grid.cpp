#include "compress/quant_grid.h"

#include <algorithm>

#include "core/dtype.h"

namespace compactor {

namespace {

// The f16 value nearest to a positive scale, kept positive and finite (tiny groups would
// otherwise round to a zero scale, huge ones to infinity).
float round_scale_to_f16(float s) {
  constexpr float kMinF16 = 5.9604645e-8f, kMaxF16 = 65504.f;
  const float r = f16_to_f32(f32_to_f16(std::clamp(s, kMinF16, kMaxF16)));
  return r > 0.f ? r : kMinF16;
}

}  // namespace

QParams qparams_from_range(float lo, float hi, const QuantSpec& spec) {
  const int max_code = quant_max_code(spec.bits);
  lo = std::fmin(lo, 0.f);
  hi = std::fmax(hi, 0.f);
  if (spec.symmetric) {
    hi = std::fmax(-lo, hi);
    if (lo < 0.f) lo = -hi;
  }
  if (lo == 0.f && hi == 0.f) {
    lo = -1.f;
    hi = 1.f;
  }
  QParams p;
  p.scale = round_scale_to_f16((hi - lo) / static_cast<float>(max_code));
  p.zero = spec.symmetric ? static_cast<float>(1 << (spec.bits - 1))
                          : std::clamp(std::nearbyint(-lo / p.scale), 0.f, static_cast<float>(max_code));
  return p;
}

Status check_quant_spec(const QuantSpec& spec, int64_t in_features, const std::string& module) {
  if (spec.bits != 2 && spec.bits != 3 && spec.bits != 4 && spec.bits != 8)
    return unsupported("{}: {}-bit weights are not supported (bits must be 2, 3, 4 or 8)", module, spec.bits);
  if (spec.group_size < 0)
    return invalid_argument("{}: group size {} is negative (0 means per-channel)", module, spec.group_size);
  if (spec.group_size > 0 && in_features % spec.group_size != 0)
    return invalid_argument("{}: group size {} does not divide the input width {} (choose a divisor, or "
                            "--per-channel)", module, spec.group_size, in_features);
  return Status::ok();
}

QuantizedLinear make_quantized_linear(const QuantSpec& spec, int64_t out_features, int64_t in_features) {
  QuantizedLinear q;
  q.spec = spec;
  q.out_features = out_features;
  q.in_features = in_features;
  q.codes.assign(out_features * in_features, 0);
  q.scales.assign(out_features * q.groups(), 1.f);
  q.zeros.assign(out_features * q.groups(), 0.f);
  return q;
}

QuantizedLinear rtn_quantize(const float* w, int64_t n_out, int64_t k_in, const QuantSpec& spec) {
  QuantizedLinear q = make_quantized_linear(spec, n_out, k_in);
  const int64_t groups = q.groups();
  const int64_t width = spec.group_size == 0 ? k_in : spec.group_size;
  const int max_code = quant_max_code(spec.bits);
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < n_out; ++n) {
    const float* row = w + n * k_in;
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t k0 = g * width, k1 = std::min(k_in, k0 + width);
      const auto [lo, hi] = std::minmax_element(row + k0, row + k1);
      const QParams p = qparams_from_range(*lo, *hi, spec);
      q.scales[n * groups + g] = p.scale;
      q.zeros[n * groups + g] = p.zero;
      for (int64_t k = k0; k < k1; ++k) q.codes[n * k_in + k] = static_cast<uint8_t>(quantize_code(row[k], p, max_code));
    }
  }
  return q;
}

void dequantize_linear(const QuantizedLinear& q, float* out) {
  const int64_t n_out = q.out_features, k_in = q.in_features, groups = q.groups();
  std::vector<int32_t> group(k_in);
  for (int64_t k = 0; k < k_in; ++k) group[k] = q.group_of(k);
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < n_out; ++n)
    for (int64_t k = 0; k < k_in; ++k) {
      const int64_t g = n * groups + group[k];
      out[n * k_in + k] = (static_cast<float>(q.codes[n * k_in + k]) - q.zeros[g]) * q.scales[g];
    }
}

std::vector<float> dequantize_linear(const QuantizedLinear& q) {
  std::vector<float> out(q.out_features * q.in_features);
  dequantize_linear(q, out.data());
  return out;
}

double storage_bits_per_weight(const QuantSpec& spec, int64_t n_out, int64_t k_in, bool act_order) {
  const int64_t groups = spec.group_size == 0 ? 1 : (k_in + spec.group_size - 1) / spec.group_size;
  const double codes = static_cast<double>(spec.bits) * n_out * k_in;
  const double scales = 16.0 * groups * n_out;
  const double zeros = 32.0 * groups * ((n_out * spec.bits + 31) / 32);
  const double g_idx = act_order ? 32.0 * k_in : 0.0;
  return (codes + scales + zeros + g_idx) / (static_cast<double>(n_out) * k_in);
}

}  // namespace compactor
