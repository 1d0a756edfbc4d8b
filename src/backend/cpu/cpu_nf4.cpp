// CPU side of NF4 linears (backend/cpu/cpu_nf4.h).
// Test: build-*/tests/test_cpu_nf4.
#include "backend/cpu/cpu_nf4.h"

#include <algorithm>
#include <vector>

namespace compactor {

NF4Ref nf4_ref(const LinearWeight& w) {
  NF4Ref r;
  r.block_size = w.group_size;
  r.out_features = w.out_features;
  r.in_features = w.in_features;
  r.qweight = w.qweight.as<const int32_t>();
  r.scales = w.scales.as<const uint8_t>();
  r.nested_scales = w.nested_scales.as<const float>();
  r.nested_offset = w.nested_offset.as<const float>();
  return r;
}

LinearWeight linear_weight_of(const PackedNF4& p, View bias) {
  LinearWeight w;
  w.format = Format::kNF4;
  w.out_features = p.out_features;
  w.in_features = p.in_features;
  w.bias = bias;
  w.qweight = p.qweight.view();
  w.scales = p.scales.view();
  w.nested_scales = p.nested_scales.view();
  w.nested_offset = p.nested_offset.view();
  w.group_size = p.block_size;
  return w;
}

void check_nf4_weight(const char* op, const LinearWeight& w) {
  COMPACTOR_ASSERT(w.format == Format::kNF4, "{}: format {} is not nf4", op, format_name(w.format));
  const Status s = check_nf4_shapes(op, w.group_size, w.out_features, w.in_features, w.qweight, w.scales,
                                    w.nested_scales, w.nested_offset);
  COMPACTOR_ASSERT(s.is_ok(), "{}", s.message());
  COMPACTOR_ASSERT(w.qweight.device == Device::kCpu && w.scales.device == Device::kCpu &&
                       w.nested_scales.device == Device::kCpu && w.nested_offset.device == Device::kCpu,
                   "{}: nf4 weight is not in host memory", op);
}

void dequantize_nf4_rows(const NF4Ref& r, int64_t n0, int64_t nb, float* out) {
  const int64_t n = r.out_features, k = r.in_features, words = (k + 7) / 8;
  for (int64_t wi = 0; wi < words; ++wi) {
    const auto* src = reinterpret_cast<const uint32_t*>(r.qweight + wi * n + n0);
    const int64_t k0 = wi * 8;
    const int count = static_cast<int>(std::min<int64_t>(8, k - k0));
    for (int64_t j = 0; j < nb; ++j) {
      const uint32_t word = src[j];
      float* dst = out + j * k + k0;
      for (int i = 0; i < count; ++i) dst[i] = kNF4Values[(word >> (4 * i)) & 15u];
    }
  }
  const int64_t bs = r.block_size;
  for (int64_t j = 0; j < nb; ++j) {
    float* row = out + j * k;
    for (int64_t b = 0; b < r.blocks(); ++b) {
      const float a = r.absmax(n0 + j, b);
      const int64_t end = std::min(k, (b + 1) * bs);
#pragma omp simd
      for (int64_t col = b * bs; col < end; ++col) row[col] *= a;
    }
  }
}

}  // namespace compactor
