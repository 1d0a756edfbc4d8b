// NF4 with double-quantized scales (formats/nf4.h): FP8 E4M3 encoding, blockwise absmax
// quantization, packing (codes as int4, formats/quant_pack.h), validation and the CPU reference
// dequantization that the CPU and CUDA kernels are tested against.
// Test: build-*/tests/test_nf4.
#include "formats/nf4.h"

#include <algorithm>
#include <cmath>

#include "formats/quant_pack.h"

namespace compactor {

namespace {

constexpr int kNF4Bits = 4;

// Decision thresholds: midpoints of consecutive levels (level i wins on (mid[i-1], mid[i]]).
struct NF4Thresholds {
  float mid[15];
  NF4Thresholds() {
    for (int i = 0; i < 15; ++i) mid[i] = 0.5f * (kNF4Values[i] + kNF4Values[i + 1]);
  }
};

int64_t nested_count(int64_t groups, int64_t out_features) {
  return (groups * out_features + kNF4NestedBlock - 1) / kNF4NestedBlock;
}

// offset = mean absmax; per 256 consecutive v = absmax - offset: scale = max|v| / 448, codes = E4M3(v / scale).
// absmax: [N, G]; scales: [G, N] u8 out; nested: [ceil(G*N/256)] f32 out
float double_quantize(const std::vector<float>& absmax, int64_t n, int64_t g, uint8_t* scales, float* nested) {
  double sum = 0;
  for (float a : absmax) sum += a;
  const float offset = static_cast<float>(sum / static_cast<double>(absmax.size()));
  const int64_t total = n * g;
  for (int64_t j = 0; j * kNF4NestedBlock < total; ++j) {
    const int64_t begin = j * kNF4NestedBlock, end = std::min(total, begin + kNF4NestedBlock);
    auto v = [&](int64_t i) { return absmax[(i % n) * g + i / n] - offset; };
    float vmax = 0.f;
    for (int64_t i = begin; i < end; ++i) vmax = std::max(vmax, std::fabs(v(i)));
    nested[j] = vmax / kE4M3Max;
    for (int64_t i = begin; i < end; ++i) scales[i] = nested[j] > 0.f ? float_to_e4m3(v(i) / nested[j]) : 0;
  }
  return offset;
}

}  // namespace

uint8_t float_to_e4m3(float x) {
  if (std::isnan(x)) return 0x7F;
  const uint8_t sign = std::signbit(x) ? 0x80 : 0;
  const float a = std::fabs(x);
  if (a >= kE4M3Max) return sign | 0x7E;
  int code;
  if (a < 1.f / 64.f) {
    // subnormal step 2^-9; a rounded result of 8 is the smallest normal (code 0x08), as it should be
    code = static_cast<int>(std::nearbyint(a * 512.f));
  } else {
    int ex;
    const float f = std::frexp(a, &ex);  // a = f · 2^ex, f in [0.5, 1)
    const int e = ex - 1;                // a in [2^e, 2^(e+1)), e in [-6, 8]
    const int m = static_cast<int>(std::nearbyint((f * 2.f - 1.f) * 8.f));  // exact product, ties to even
    code = ((e + 7) << 3) + m;           // m == 8 carries into the exponent
  }
  return sign | static_cast<uint8_t>(std::min(code, 0x7E));
}

uint8_t nearest_nf4_code(float x) {
  static const NF4Thresholds t;
  const float* it = std::lower_bound(t.mid, t.mid + 15, x);
  return static_cast<uint8_t>(it - t.mid);
}

NF4Linear quantize_nf4(const float* w, int64_t out_features, int64_t in_features, int block_size) {
  COMPACTOR_ASSERT(block_size > 0 && out_features > 0 && in_features > 0, "quantize_nf4: [{}, {}] block {}",
                   out_features, in_features, block_size);
  NF4Linear q;
  q.block_size = block_size;
  q.out_features = out_features;
  q.in_features = in_features;
  const int64_t k = in_features, g = q.blocks();
  q.codes.resize(out_features * k);
  q.absmax.resize(out_features * g);
  for (int64_t n = 0; n < out_features; ++n) {
    for (int64_t b = 0; b < g; ++b) {
      const int64_t k0 = b * block_size, k1 = std::min(k, k0 + block_size);
      float amax = 0.f;
      for (int64_t c = k0; c < k1; ++c) amax = std::max(amax, std::fabs(w[n * k + c]));
      q.absmax[n * g + b] = amax;
      for (int64_t c = k0; c < k1; ++c) q.codes[n * k + c] = amax > 0.f ? nearest_nf4_code(w[n * k + c] / amax) : 7;
    }
  }
  return q;
}

NF4Ref PackedNF4::ref() const {
  NF4Ref r;
  r.block_size = block_size;
  r.out_features = out_features;
  r.in_features = in_features;
  r.qweight = qweight.as<const int32_t>();
  r.scales = scales.as<const uint8_t>();
  r.nested_scales = nested_scales.as<const float>();
  r.nested_offset = nested_offset.as<const float>();
  return r;
}

int64_t PackedNF4::bytes() const {
  return qweight.bytes() + scales.bytes() + nested_scales.bytes() + nested_offset.bytes();
}

Status validate_nf4_linear(const NF4Linear& q) {
  const int64_t n = q.out_features, k = q.in_features;
  if (q.block_size <= 0) return invalid_argument("nf4 linear: block size {} is not positive", q.block_size);
  if (n <= 0 || k <= 0) return invalid_argument("nf4 linear: shape [{}, {}] is empty", n, k);
  const int64_t g = q.blocks();
  if (static_cast<int64_t>(q.codes.size()) != n * k)
    return invalid_argument("nf4 linear: codes has {} entries, expected N*K = {}", q.codes.size(), n * k);
  if (static_cast<int64_t>(q.absmax.size()) != n * g)
    return invalid_argument("nf4 linear: absmax has {} entries, expected N*G = {}*{}", q.absmax.size(), n, g);
  for (size_t i = 0; i < q.codes.size(); ++i)
    if (q.codes[i] >= 16)
      return invalid_argument("nf4 linear: code {} at [{}, {}] is not below 16", q.codes[i], i / k, i % k);
  for (size_t i = 0; i < q.absmax.size(); ++i)
    if (!std::isfinite(q.absmax[i]) || q.absmax[i] < 0.f)
      return invalid_argument("nf4 linear: absmax {} at [n {}, block {}] is not finite and >= 0", q.absmax[i], i / g,
                              i % g);
  return Status::ok();
}

Result<PackedNF4> pack_nf4(const NF4Linear& q) {
  RETURN_IF_ERROR(validate_nf4_linear(q));
  const int64_t n = q.out_features, k = q.in_features, g = q.blocks();
  PackedNF4 p;
  p.block_size = q.block_size;
  p.out_features = n;
  p.in_features = k;
  p.qweight = Tensor::zeros(Shape{packed_words(kNF4Bits, k), n}, DType::kI32);
  p.scales = Tensor::zeros(Shape{g, n}, DType::kU8);
  p.nested_scales = Tensor::zeros(Shape{nested_count(g, n)}, DType::kF32);
  p.nested_offset = Tensor::empty(Shape{1}, DType::kF32);
  auto* qw = p.qweight.as<uint32_t>();
  for (int64_t row = 0; row < n; ++row)
    for (int64_t col = 0; col < k; ++col)
      qw[(col / 8) * n + row] |= static_cast<uint32_t>(q.codes[row * k + col]) << (4 * (col % 8));
  p.nested_offset.as<float>()[0] =
      double_quantize(q.absmax, n, g, p.scales.as<uint8_t>(), p.nested_scales.as<float>());
  return p;
}

NF4Linear unpack_nf4(const NF4Ref& r) {
  NF4Linear q;
  q.block_size = r.block_size;
  q.out_features = r.out_features;
  q.in_features = r.in_features;
  const int64_t n = r.out_features, k = r.in_features, g = r.blocks();
  q.codes.resize(n * k);
  q.absmax.resize(n * g);
  for (int64_t row = 0; row < n; ++row) {
    for (int64_t col = 0; col < k; ++col)
      q.codes[row * k + col] = static_cast<uint8_t>(packed_value(r.qweight + row, n, kNF4Bits, col));
    for (int64_t b = 0; b < g; ++b) q.absmax[row * g + b] = r.absmax(row, b);
  }
  return q;
}

Status check_nf4_shapes(const std::string& module, int block_size, int64_t out_features, int64_t in_features,
                        View qweight, View scales, View nested_scales, View nested_offset) {
  if (block_size <= 0) return corrupt("module '{}': nf4 block size {} is not positive", module, block_size);
  const int64_t n = out_features, k = in_features, g = (k + block_size - 1) / block_size;
  auto expect = [&](const char* suffix, View v, DType dtype, Shape shape) -> Status {
    if (v.data == nullptr) return not_found("tensor '{}.{}' is missing (nf4 needs it)", module, suffix);
    if (v.dtype != dtype || !(v.shape == shape))
      return corrupt("tensor '{}.{}' is {} {} but nf4 block {} of [{}, {}] needs {} {}", module, suffix,
                     dtype_name(v.dtype), v.shape.str(), block_size, n, k, dtype_name(dtype), shape.str());
    return Status::ok();
  };
  RETURN_IF_ERROR(expect("qweight", qweight, DType::kI32, Shape{packed_words(kNF4Bits, k), n}));
  RETURN_IF_ERROR(expect("scales", scales, DType::kU8, Shape{g, n}));
  RETURN_IF_ERROR(expect("nested_scales", nested_scales, DType::kF32, Shape{nested_count(g, n)}));
  RETURN_IF_ERROR(expect("nested_offset", nested_offset, DType::kF32, Shape{1}));
  return Status::ok();
}

void dequantize_nf4_ref(const NF4Ref& r, float* out) {
  const int64_t n = r.out_features, k = r.in_features;
  for (int64_t row = 0; row < n; ++row)
    for (int64_t col = 0; col < k; ++col)
      out[row * k + col] =
          kNF4Values[packed_value(r.qweight + row, n, kNF4Bits, col)] * r.absmax(row, col / r.block_size);
}

int64_t nf4_packed_bytes(int64_t out_features, int64_t in_features, int block_size) {
  const int64_t g = (in_features + block_size - 1) / block_size;
  return 4 * packed_words(kNF4Bits, in_features) * out_features + g * out_features +
         4 * nested_count(g, out_features) + 4;
}

double nf4_bits_per_weight(int64_t out_features, int64_t in_features, int block_size) {
  return 8.0 * static_cast<double>(nf4_packed_bytes(out_features, in_features, block_size)) /
         static_cast<double>(out_features * in_features);
}

}  // namespace compactor
