// NF4 with double-quantized scales (QLoRA, Dettmers et al. 2023, §3 "4-bit NormalFloat" and
// "Double Quantization"): the contract between the NF4 quantizer, the storage (compressed model
// directories), the CPU reference and the CUDA kernels.
//
//   w[n, k] ≈ kNF4Values[c[n, k]] · absmax[n, b(k)]        b(k) = k / block_size (block_size 64)
//
// codes c in [0, 16) index the 16 NormalFloat levels (quantiles of N(0, 1) normalised to [-1, 1],
// with an exact 0; the values of the paper's appendix / bitsandbytes). absmax[n, b] is the largest
// |w| of the block (the first-level scale). Double quantization stores absmax itself in 8 bits:
//
//   offset        = mean of all absmax of the linear                           (f32, one per linear)
//   v[g, n]       = absmax[n, g] - offset, flattened row-major over [G, N]: index i = g * N + n
//   nested block  j = i / kNF4NestedBlock (256 consecutive entries)
//   nested_scale[j] = max_i∈j |v_i| / 448                                     (f32)
//   scales[g, n]  = E4M3(v[g, n] / nested_scale[j])   (FP8 E4M3 bits, round to nearest even)
//   absmax'[n, g] = e4m3_to_float(scales[g, n]) · nested_scale[j] + offset     (what every reader uses)
//
// The paper uses "8-bit floats with a blocksize of 256" for the second level; we use FP8 E4M3
// (bitsandbytes uses its 8-bit dynamic-tree map instead, so its files are not byte-compatible).
// Storage of one linear (names as the intN formats where the meaning matches; N = out, K = in,
// G = ceil(K / block_size)):
//   <module>.qweight        i32 [W(K), N]  the codes, packed exactly as int4 (quant_pack.h: column
//                                         n holds c[n, 0..K), 8 codes per word, little-endian)
//   <module>.scales         u8  [G, N]     E4M3 bits of the double-quantized absmax
//   <module>.nested_scales  f32 [ceil(G * N / 256)]
//   <module>.nested_offset  f32 [1]
// Bits per weight at block 64: 4 + 8/64 + 32/(64*256) ≈ 4.127 (QLoRA: 4.127).
// Test: build-*/tests/test_nf4.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "core/status.h"
#include "core/tensor.h"

namespace compactor {

#ifdef __CUDACC__
#define COMPACTOR_NF4_HD __host__ __device__
#else
#define COMPACTOR_NF4_HD
#endif

inline constexpr int kNF4DefaultBlock = 64;   // first-level block (input columns per absmax)
inline constexpr int kNF4NestedBlock = 256;   // absmax entries per nested scale
inline constexpr float kE4M3Max = 448.f;

// The 16 NF4 levels, in code order.
inline constexpr float kNF4Values[16] = {
    -1.0f,
    -0.6961928009986877f,
    -0.5250730514526367f,
    -0.39491748809814453f,
    -0.28444138169288635f,
    -0.18477343022823334f,
    -0.09105003625154495f,
    0.0f,
    0.07958029955625534f,
    0.16093020141124725f,
    0.24611230194568634f,
    0.33791524171829224f,
    0.44070982661247253f,
    0.5626170039176941f,
    0.7229568362236023f,
    1.0f,
};

// FP8 E4M3 (OCP FP8, "fn" variant: bias 7, no infinities, S.1111.111 is NaN, max 448).
COMPACTOR_NF4_HD inline float e4m3_to_float(uint8_t b) {
  const uint32_t sign = (b & 0x80u) << 24, e = (b >> 3) & 15u, m = b & 7u;
  if (e == 15 && m == 7) return __builtin_nanf("");
  float v;
  if (e == 0) {
    v = static_cast<float>(m) * (1.f / 512.f);  // subnormal: m/8 · 2^-6
    return sign ? -v : v;
  }
  // (1 + m/8) · 2^(e - 7): the f32 with exponent e - 7 + 127 and the top 3 mantissa bits m
  const uint32_t bits = sign | ((e + 120u) << 23) | (m << 20);
  memcpy(&v, &bits, sizeof v);
  return v;
}

// The first-level scale of one block from its stored parts (the formula above).
COMPACTOR_NF4_HD inline float nf4_absmax(uint8_t scale_code, float nested_scale, float offset) {
  return e4m3_to_float(scale_code) * nested_scale + offset;
}

// Host side (formats/nf4.cpp): quantization, packing, validation and the dequantization reference.

// Nearest FP8 E4M3 code of x (round to nearest even, saturating to ±448; NaN -> 0x7F).
// float_to_e4m3(e4m3_to_float(c)) == c for all 254 non-NaN codes.
uint8_t float_to_e4m3(float x);

// Index of the NF4 level nearest to x (x in [-1, 1]; values outside clamp to the end levels).
uint8_t nearest_nf4_code(float x);

// One linear in unpacked NF4 form, before (or after) double quantization of its absmax.
struct NF4Linear {
  int block_size = kNF4DefaultBlock;
  int64_t out_features = 0;     // N
  int64_t in_features = 0;      // K
  std::vector<uint8_t> codes;   // [N, K] in [0, 16)
  std::vector<float> absmax;    // [N, G] first-level scales, G = ceil(K / block_size)

  int64_t blocks() const { return (in_features + block_size - 1) / block_size; }
  float dequantized(int64_t n, int64_t k) const {
    return kNF4Values[codes[n * in_features + k]] * absmax[n * blocks() + k / block_size];
  }
};

// Blockwise absmax quantization: absmax[n, b] = max |w| over the block (the last block of a row may
// be partial), codes = nearest level of w / absmax (absmax 0 -> code 7, the exact 0).
// w: [N, K] f32 row-major. block_size > 0.
NF4Linear quantize_nf4(const float* w, int64_t out_features, int64_t in_features, int block_size = kNF4DefaultBlock);

// A non-owning host view of the stored tensors of one NF4 linear (layout above).
struct NF4Ref {
  int block_size = kNF4DefaultBlock;
  int64_t out_features = 0;            // N
  int64_t in_features = 0;             // K
  const int32_t* qweight = nullptr;    // [ceil(K / 8), N] i32
  const uint8_t* scales = nullptr;     // [G, N] E4M3 bits
  const float* nested_scales = nullptr;  // [ceil(G * N / 256)] f32
  const float* nested_offset = nullptr;  // [1] f32

  int64_t blocks() const { return (in_features + block_size - 1) / block_size; }
  // absmax' of (output row n, block g): the value every reader uses.
  float absmax(int64_t n, int64_t g) const {
    const int64_t i = g * out_features + n;
    return nf4_absmax(scales[i], nested_scales[i / kNF4NestedBlock], nested_offset[0]);
  }
};

// Owning host tensors of one packed NF4 linear.
struct PackedNF4 {
  int block_size = kNF4DefaultBlock;
  int64_t out_features = 0;  // N
  int64_t in_features = 0;   // K
  Tensor qweight;            // [ceil(K / 8), N] i32
  Tensor scales;             // [G, N] u8
  Tensor nested_scales;      // [ceil(G * N / 256)] f32
  Tensor nested_offset;      // [1] f32

  NF4Ref ref() const;
  int64_t bytes() const;
};

// Sizes, codes < 16 and finite non-negative absmax; messages name the field and index.
Status validate_nf4_linear(const NF4Linear& q);

// Packs the codes (int4 layout) and double-quantizes absmax (the formula above).
Result<PackedNF4> pack_nf4(const NF4Linear& q);

// The inverse of pack_nf4 up to the double quantization: codes, and absmax' (reconstructed).
NF4Linear unpack_nf4(const NF4Ref& r);

// Checks that stored tensors of these shapes/dtypes are a consistent [N, K] NF4 linear with this
// block size; messages name `module` and the tensor.
Status check_nf4_shapes(const std::string& module, int block_size, int64_t out_features, int64_t in_features,
                        View qweight, View scales, View nested_scales, View nested_offset);

// The spec: out[n, k] = kNF4Values[c[n, k]] · absmax'[n, k / block_size]. out: [N, K] f32
void dequantize_nf4_ref(const NF4Ref& r, float* out);

// Bytes of the stored tensors of an [N, K] NF4 linear, and bits per weight (≈ 4.127 at block 64).
int64_t nf4_packed_bytes(int64_t out_features, int64_t in_features, int block_size = kNF4DefaultBlock);
double nf4_bits_per_weight(int64_t out_features, int64_t in_features, int block_size = kNF4DefaultBlock);

}  // namespace compactor
