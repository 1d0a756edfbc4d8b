// Packing of quantized linear weights (formats/quant.h: QuantizedLinear, the unpacked contract)
// into the storage of the intN formats (format.h), the inverse, and the scalar dequantization
// reference that every quantized matmul (CPU fast path, CUDA) is tested against.
//
// Storage (GPTQ/AutoGPTQ-compatible tensor names, shapes and bit order; N = out, K = in,
// G = groups = ceil(K / group_size), or 1 per-channel; W(x) = ceil(x * bits / 32)):
//   <module>.qweight  i32 [W(K), N]   codes; column n holds the codes c[n, 0..K) of output row n
//   <module>.scales   f16 [G, N]      scale per (group, output row)
//   <module>.qzeros   i32 [G, W(N)]   zero points (integers in [0, 2^bits)), packed along N
//   <module>.g_idx    i32 [K]         group of each input column; only stored for act-order
//                                     (absent: g(k) = k / group_size, per-channel: 0)
//   w[n, k] = (c[n, k] - z[g(k), n]) * s[g(k), n]
//
// Bit layout: the values of one packed line (the K codes of output row n in qweight, read down
// column n; the N zeros of group g in qzeros, read along row g) form one little-endian bit stream,
// value i occupying stream bits [i*bits, (i+1)*bits); stream bit b is bit b % 32 of word b / 32.
// The last word is zero-padded. For 2/4/8 bits this is GPTQ's "32/bits values per int32"; for
// 3 bits it is exactly GPTQ's 32-values-in-3-words scheme (value 10 straddles words 0 and 1,
// value 21 straddles words 1 and 2). Example, int4, one column, codes c0..c7 of k = 0..7:
//
//   qweight[0, n] (int32):  bit 31        28 27        24      ...      7          4 3          0
//                                +-----------+-----------+-   ...   -+-----------+-----------+
//                                |    c7     |    c6     |    ...    |    c1     |    c0     |
//                                +-----------+-----------+-   ...   -+-----------+-----------+
//   int3, words j = 0..2 of a 32-code block:
//     word 0: c0 @0..2, c1 @3..5, ..., c9 @27..29, c10 bits 0-1 @30..31
//     word 1: c10 bit 2 @0, c11 @1..3, ..., c20 @28..30, c21 bit 0 @31
//     word 2: c21 bits 1-2 @0..1, c22 @2..4, ..., c31 @29..31
//
// Zero points: we store the true zero z. AutoGPTQ "v1" checkpoints (checkpoint_format "gptq")
// store z - 1 (and add 1 back when dequantizing); a loader of such checkpoints adds 1 to every
// unpacked zero (mod 2^bits), an exporter to that format subtracts 1 before packing. "gptq_v2"
// checkpoints store the true zero like we do.
// Symmetric quantization uses the same storage with z = 2^(bits-1).
// Scales are stored as f16: pack_linear rounds them, so compressors that measure their error
// should call round_scales_to_storage() first (their dequantized weights then match the stored ones).
//
// Test: build-*/tests/test_quant_pack.
#pragma once

#include <cstdint>
#include <string>

#include "core/status.h"
#include "core/tensor.h"
#include "formats/format.h"
#include "formats/quant.h"

namespace compactor {

// int32 words that hold `count` values of `bits` bits as one padded little-endian bit stream.
constexpr int64_t packed_words(int bits, int64_t count) { return (count * bits + 31) / 32; }

// Groups of a linear with K inputs: ceil(K / group_size), 1 per-channel (group_size 0).
constexpr int64_t quant_groups(int group_size, int64_t in_features) {
  return group_size == 0 ? 1 : (in_features + group_size - 1) / group_size;
}

// A non-owning host view of packed tensors (what dequantize_ref reads).
struct PackedRef {
  int bits = 4;
  int group_size = 128;  // 0 = per-channel
  int64_t out_features = 0;          // N
  int64_t in_features = 0;           // K
  const int32_t* qweight = nullptr;  // [packed_words(bits, K), N]
  const uint16_t* scales = nullptr;  // [G, N] f16 bits
  const int32_t* qzeros = nullptr;   // [G, packed_words(bits, N)]
  const int32_t* g_idx = nullptr;    // [K] or nullptr (k / group_size)

  int64_t groups() const { return quant_groups(group_size, in_features); }
};

// Owning host tensors of one packed linear.
struct PackedLinear {
  Format format = Format::kInt4;
  QuantSpec spec;
  int64_t out_features = 0;  // N
  int64_t in_features = 0;   // K
  Tensor qweight;            // [packed_words(bits, K), N] i32
  Tensor scales;             // [G, N] f16
  Tensor qzeros;             // [G, packed_words(bits, N)] i32
  Tensor g_idx;              // [K] i32; undefined unless act-order

  bool act_order() const { return g_idx.defined(); }
  PackedRef ref() const;
  int64_t bytes() const;     // all packed tensors
};

// Checks sizes, code/zero ranges (integers in [0, 2^bits); 2^(bits-1) when symmetric), scales
// finite within f16 range, and g_idx entries in [0, G). Messages name the field and index.
Status validate_quantized_linear(const QuantizedLinear& q);

// Packs (after validate_quantized_linear). Scales are rounded to f16.
Result<PackedLinear> pack_linear(const QuantizedLinear& q);

// The inverse of pack_linear: codes, f16 scales widened to f32, zeros, g_idx (empty when absent).
// unpack_linear(pack_linear(q)) == q whenever q's scales are f16-representable.
// `symmetric` is not visible in the tensors (it is in quantization_config): the caller passes it.
QuantizedLinear unpack_linear(const PackedRef& p, bool symmetric = false);

// Checks that packed tensors of the given shapes/dtypes are a consistent [N, K] linear of this
// format and group size; messages name `module` and the tensor.
Status check_packed_shapes(const std::string& module, int bits, int group_size, int64_t out_features,
                           int64_t in_features, View qweight, View scales, View qzeros, View g_idx);

// The spec: out[n, k] = (c[n, k] - z[g(k), n]) * s[g(k), n] in f32. out: [N, K] f32
void dequantize_ref(const PackedRef& p, float* out);
// The same from the unpacked form (no f16 rounding of scales). out: [N, K] f32
void dequantize_ref(const QuantizedLinear& q, float* out);

// Rounds every scale to the nearest f16 (what pack_linear stores).
void round_scales_to_storage(QuantizedLinear& q);

#ifdef __CUDACC__
#define COMPACTOR_HOST_DEVICE __host__ __device__
#else
#define COMPACTOR_HOST_DEVICE
#endif

// Code i of a packed line whose word j lives at words[j * stride] (see the bit layout above).
// Shared by the host reference and the CUDA kernels.
COMPACTOR_HOST_DEVICE inline uint32_t packed_value(const int32_t* words, int64_t stride, int bits, int64_t i) {
  const int64_t bit = i * bits;
  const int64_t w = bit >> 5;
  const int off = static_cast<int>(bit & 31);
  uint64_t v = static_cast<uint32_t>(words[w * stride]) >> off;
  if (off + bits > 32) v |= static_cast<uint64_t>(static_cast<uint32_t>(words[(w + 1) * stride])) << (32 - off);
  return static_cast<uint32_t>(v) & ((1u << bits) - 1u);
}

// Storage bits per weight of an [N, K] linear in this spec, scales, zeros and g_idx included
// (e.g. int4 g128: 4 + 16/128 + 4/128 = 4.156; with act-order + 32/N).
double quant_bits_per_weight(const QuantSpec& spec, int64_t out_features, int64_t in_features, bool act_order);
// Bytes of the packed tensors of such a linear.
int64_t quant_packed_bytes(const QuantSpec& spec, int64_t out_features, int64_t in_features, bool act_order);

}  // namespace compactor
