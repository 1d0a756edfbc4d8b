// Packing, unpacking and reference dequantization of the intN formats; layout in quant_pack.h.
// Test: build-*/tests/test_quant_pack.
#include "formats/quant_pack.h"

#include <algorithm>
#include <cmath>

namespace compactor {

namespace {

// Writes value v (< 2^bits) as value i of the packed line whose word j is words[j * stride].
void put_packed(int32_t* words, int64_t stride, int bits, int64_t i, uint32_t v) {
  const int64_t bit = i * bits;
  const int64_t w = bit >> 5;
  const int off = static_cast<int>(bit & 31);
  auto* lo = reinterpret_cast<uint32_t*>(words + w * stride);
  *lo |= v << off;
  if (off + bits > 32) *reinterpret_cast<uint32_t*>(words + (w + 1) * stride) |= v >> (32 - off);
}

bool valid_bits(int bits) { return bits == 2 || bits == 3 || bits == 4 || bits == 8; }

Status validate_sizes(const QuantizedLinear& q) {
  const int64_t n = q.out_features, k = q.in_features;
  if (!valid_bits(q.spec.bits)) return invalid_argument("quantized linear: bits {} (expected 2, 3, 4 or 8)", q.spec.bits);
  if (q.spec.group_size < 0) return invalid_argument("quantized linear: group_size {} < 0", q.spec.group_size);
  if (n <= 0 || k <= 0) return invalid_argument("quantized linear: shape [{}, {}] is empty", n, k);
  const int64_t g = q.groups();
  if (static_cast<int64_t>(q.codes.size()) != n * k)
    return invalid_argument("quantized linear: codes has {} entries, expected N*K = {}", q.codes.size(), n * k);
  if (static_cast<int64_t>(q.scales.size()) != n * g || static_cast<int64_t>(q.zeros.size()) != n * g)
    return invalid_argument("quantized linear: scales/zeros have {}/{} entries, expected N*G = {}*{}", q.scales.size(),
                            q.zeros.size(), n, g);
  if (!q.g_idx.empty() && static_cast<int64_t>(q.g_idx.size()) != k)
    return invalid_argument("quantized linear: g_idx has {} entries, expected K = {}", q.g_idx.size(), k);
  if (!q.g_idx.empty() && q.spec.group_size == 0)
    return invalid_argument("quantized linear: g_idx given for a per-channel spec (group_size 0)");
  return Status::ok();
}

}  // namespace

PackedRef PackedLinear::ref() const {
  PackedRef r;
  r.bits = spec.bits;
  r.group_size = spec.group_size;
  r.out_features = out_features;
  r.in_features = in_features;
  r.qweight = qweight.as<const int32_t>();
  r.scales = scales.as<const uint16_t>();
  r.qzeros = qzeros.as<const int32_t>();
  r.g_idx = g_idx.defined() ? g_idx.as<const int32_t>() : nullptr;
  return r;
}

int64_t PackedLinear::bytes() const {
  return qweight.bytes() + scales.bytes() + qzeros.bytes() + (g_idx.defined() ? g_idx.bytes() : 0);
}

Status validate_quantized_linear(const QuantizedLinear& q) {
  RETURN_IF_ERROR(validate_sizes(q));
  const uint32_t levels = 1u << q.spec.bits;
  for (size_t i = 0; i < q.codes.size(); ++i)
    if (q.codes[i] >= levels)
      return invalid_argument("quantized linear: code {} at [{}, {}] is not below 2^{}", q.codes[i],
                              i / q.in_features, i % q.in_features, q.spec.bits);
  const int64_t g = q.groups();
  for (size_t i = 0; i < q.zeros.size(); ++i) {
    const float z = q.zeros[i];
    if (!(z >= 0 && z < static_cast<float>(levels)) || z != std::floor(z))
      return invalid_argument("quantized linear: zero {} at [n {}, group {}] is not an integer in [0, {})", z, i / g,
                              i % g, levels);
    if (q.spec.symmetric && z != static_cast<float>(levels / 2))
      return invalid_argument("quantized linear: symmetric spec but zero {} at [n {}, group {}] is not 2^(bits-1) = {}",
                              z, i / g, i % g, levels / 2);
    const float s = q.scales[i];
    if (!std::isfinite(s) || std::fabs(s) > 65504.f)
      return invalid_argument("quantized linear: scale {} at [n {}, group {}] is not a finite f16 value", s, i / g,
                              i % g);
  }
  for (size_t k = 0; k < q.g_idx.size(); ++k)
    if (q.g_idx[k] < 0 || q.g_idx[k] >= g)
      return invalid_argument("quantized linear: g_idx[{}] = {} is outside [0, {})", k, q.g_idx[k], g);
  return Status::ok();
}

Result<PackedLinear> pack_linear(const QuantizedLinear& q) {
  RETURN_IF_ERROR(validate_quantized_linear(q));
  const int bits = q.spec.bits;
  const int64_t n = q.out_features, k = q.in_features, g = q.groups();
  PackedLinear p;
  COMPACTOR_ASSERT(format_from_bits(bits, &p.format), "bits {}", bits);
  p.spec = q.spec;
  p.out_features = n;
  p.in_features = k;
  p.qweight = Tensor::zeros(Shape{packed_words(bits, k), n}, DType::kI32);
  p.scales = Tensor::empty(Shape{g, n}, DType::kF16);
  p.qzeros = Tensor::zeros(Shape{g, packed_words(bits, n)}, DType::kI32);
  auto* qw = p.qweight.as<int32_t>();
  auto* sc = p.scales.as<uint16_t>();
  auto* qz = p.qzeros.as<int32_t>();
  for (int64_t row = 0; row < n; ++row)
    for (int64_t col = 0; col < k; ++col) put_packed(qw + row, n, bits, col, q.codes[row * k + col]);
  const int64_t zero_words = packed_words(bits, n);
  for (int64_t row = 0; row < n; ++row) {
    for (int64_t grp = 0; grp < g; ++grp) {
      sc[grp * n + row] = f32_to_f16(q.scales[row * g + grp]);
      put_packed(qz + grp * zero_words, 1, bits, row, static_cast<uint32_t>(q.zeros[row * g + grp]));
    }
  }
  if (!q.g_idx.empty()) {
    p.g_idx = Tensor::empty(Shape{k}, DType::kI32);
    std::copy(q.g_idx.begin(), q.g_idx.end(), p.g_idx.as<int32_t>());
  }
  return p;
}

QuantizedLinear unpack_linear(const PackedRef& p, bool symmetric) {
  QuantizedLinear q;
  q.spec = QuantSpec{p.bits, p.group_size, symmetric};
  q.out_features = p.out_features;
  q.in_features = p.in_features;
  const int64_t n = p.out_features, k = p.in_features, g = p.groups();
  const int64_t zero_words = packed_words(p.bits, n);
  q.codes.resize(n * k);
  q.scales.resize(n * g);
  q.zeros.resize(n * g);
  for (int64_t row = 0; row < n; ++row)
    for (int64_t col = 0; col < k; ++col)
      q.codes[row * k + col] = static_cast<uint8_t>(packed_value(p.qweight + row, n, p.bits, col));
  for (int64_t row = 0; row < n; ++row) {
    for (int64_t grp = 0; grp < g; ++grp) {
      q.scales[row * g + grp] = f16_to_f32(p.scales[grp * n + row]);
      q.zeros[row * g + grp] = static_cast<float>(packed_value(p.qzeros + grp * zero_words, 1, p.bits, row));
    }
  }
  if (p.g_idx) q.g_idx.assign(p.g_idx, p.g_idx + k);
  return q;
}

Status check_packed_shapes(const std::string& module, int bits, int group_size, int64_t out_features,
                           int64_t in_features, View qweight, View scales, View qzeros, View g_idx) {
  const int64_t n = out_features, k = in_features, g = quant_groups(group_size, k);
  auto expect = [&](const char* suffix, View v, DType dtype, Shape shape) -> Status {
    if (v.dtype != dtype || !(v.shape == shape))
      return corrupt("tensor '{}.{}' is {} {} but int{} group {} of [{}, {}] needs {} {}", module, suffix,
                     dtype_name(v.dtype), v.shape.str(), bits, group_size, n, k, dtype_name(dtype), shape.str());
    return Status::ok();
  };
  RETURN_IF_ERROR(expect("qweight", qweight, DType::kI32, Shape{packed_words(bits, k), n}));
  RETURN_IF_ERROR(expect("scales", scales, DType::kF16, Shape{g, n}));
  RETURN_IF_ERROR(expect("qzeros", qzeros, DType::kI32, Shape{g, packed_words(bits, n)}));
  if (g_idx.data != nullptr) RETURN_IF_ERROR(expect("g_idx", g_idx, DType::kI32, Shape{k}));
  return Status::ok();
}

void dequantize_ref(const PackedRef& p, float* out) {
  const int64_t n = p.out_features, k = p.in_features;
  const int64_t zero_words = packed_words(p.bits, n);
  for (int64_t row = 0; row < n; ++row) {
    for (int64_t col = 0; col < k; ++col) {
      const int64_t grp = p.g_idx ? p.g_idx[col] : (p.group_size == 0 ? 0 : col / p.group_size);
      const float code = static_cast<float>(packed_value(p.qweight + row, n, p.bits, col));
      const float zero = static_cast<float>(packed_value(p.qzeros + grp * zero_words, 1, p.bits, row));
      out[row * k + col] = (code - zero) * f16_to_f32(p.scales[grp * n + row]);
    }
  }
}

void dequantize_ref(const QuantizedLinear& q, float* out) {
  for (int64_t row = 0; row < q.out_features; ++row)
    for (int64_t col = 0; col < q.in_features; ++col) out[row * q.in_features + col] = q.dequantized(row, col);
}

void round_scales_to_storage(QuantizedLinear& q) {
  for (float& s : q.scales) s = f16_to_f32(f32_to_f16(s));
}

int64_t quant_packed_bytes(const QuantSpec& spec, int64_t out_features, int64_t in_features, bool act_order) {
  const int64_t g = quant_groups(spec.group_size, in_features);
  return 4 * packed_words(spec.bits, in_features) * out_features + 2 * g * out_features +
         4 * g * packed_words(spec.bits, out_features) + (act_order ? 4 * in_features : 0);
}

double quant_bits_per_weight(const QuantSpec& spec, int64_t out_features, int64_t in_features, bool act_order) {
  return 8.0 * static_cast<double>(quant_packed_bytes(spec, out_features, in_features, act_order)) /
         static_cast<double>(out_features * in_features);
}

}  // namespace compactor
