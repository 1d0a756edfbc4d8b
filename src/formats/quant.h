// Quantized linear weights in their unpacked form: the contract between the compressors
// (src/compress: RTN, GPTQ, AWQ produce it) and the formats/backends (pack it into the storage
// formats of format.h, dequantize it, multiply with it).
//
//   w[n, k] ≈ (codes[n, k] - zeros[n, g(k)]) * scales[n, g(k)]
//   g(k) = g_idx[k] when g_idx is given (act-order), else k / group_size; per-channel: g(k) = 0
//
// Symmetric quantization uses zero = 2^(bits-1) (codes stay unsigned, as in GPTQ checkpoints).
#pragma once

#include <cstdint>
#include <vector>

namespace compactor {

struct QuantSpec {
  int bits = 4;            // 2, 3, 4 or 8
  int group_size = 128;    // input columns per scale; 0 = one group per output row (per-channel)
  bool symmetric = false;
};

struct QuantizedLinear {
  QuantSpec spec;
  int64_t out_features = 0;      // N
  int64_t in_features = 0;       // K
  std::vector<uint8_t> codes;    // [N, K], each in [0, 2^bits)
  std::vector<float> scales;     // [N, G]
  std::vector<float> zeros;      // [N, G], integer-valued
  std::vector<int32_t> g_idx;    // [K] group of each input column; empty = k / group_size

  int64_t groups() const {
    return spec.group_size == 0 ? 1 : (in_features + spec.group_size - 1) / spec.group_size;
  }
  int group_of(int64_t k) const {
    if (!g_idx.empty()) return g_idx[k];
    return spec.group_size == 0 ? 0 : static_cast<int>(k / spec.group_size);
  }
  float dequantized(int64_t n, int64_t k) const {
    const int64_t g = group_of(k);
    return (static_cast<float>(codes[n * in_features + k]) - zeros[n * groups() + g]) * scales[n * groups() + g];
  }
};

}  // namespace compactor
