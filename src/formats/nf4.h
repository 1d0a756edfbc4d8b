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
  const int sign = b >> 7, e = (b >> 3) & 15, m = b & 7;
  float v;
  if (e == 0) {
    v = static_cast<float>(m) * (1.f / 512.f);  // subnormal: m/8 · 2^-6
  } else if (e == 15 && m == 7) {
    v = __builtin_nanf("");
  } else {
    // (1 + m/8) · 2^(e - 7), built exactly
    float p = 1.f;
    for (int i = 7; i < e; ++i) p *= 2.f;
    for (int i = e; i < 7; ++i) p *= 0.5f;
    v = (1.f + static_cast<float>(m) * 0.125f) * p;
  }
  return sign ? -v : v;
}

// The first-level scale of one block from its stored parts (the formula above).
COMPACTOR_NF4_HD inline float nf4_absmax(uint8_t scale_code, float nested_scale, float offset) {
  return e4m3_to_float(scale_code) * nested_scale + offset;
}

}  // namespace compactor
