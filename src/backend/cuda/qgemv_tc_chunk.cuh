// Device building blocks of the tensor-core int4/int8/NF4 GEMV (qgemv_tc.cu) and its streaming
// variant (qgemv_stream.cu): the launch arguments, the dequantize-into-A-fragment arithmetic and
// the per-chunk mma sequences. Both kernels read the same tc layout (formats/quant_repack.h); they
// differ only in how the codes reach the registers (direct loads vs. bulk copies into shared memory).
// Test: build-*/tests/test_cuda_qgemm (on a GPU machine).
#pragma once

#include <type_traits>

#include "backend/cuda/device_utils.cuh"
#include "backend/cuda/mma.cuh"
#include "backend/cuda/qgemv.cuh"

namespace compactor {
namespace qtc {

// One weight of a launch: grouped launches (qgemv_group_cuda) multiply the same x by up to
// kQgemvMaxGroup weights of one K and group size, their row tiles numbered one after the other.
struct TcSegment {
  const uint4* tc;             // [N/16][Kp/64][32][4] u32 (tc layout)
  const uint32_t* scale_zero;  // [N, Gp]
  void* out;                   // [M, N] act
  const void* bias;            // [N] or nullptr
  int64_t n;                   // N
  int64_t first_tile;          // row tiles of the segments before this one
};

struct QgemvTcArgs {
  TcSegment seg[kQgemvMaxGroup];
  int segments;
  const void* x;               // [M, ldx] act (kGather: x itself, ldx = K)
  const int32_t* perm;         // kGather: [Kp] column of each position (-1: padding)
  DType bias_dtype;
  int64_t m, ldx, groups_padded;
  int chunks;       // Kp / 64
  int group_shift;  // position p is in group p >> group_shift
  bool accumulate;
  bool nf4;         // NF4 codes (levels × f32 absmax) instead of int4 (c - z) × f16 scale
  bool int8;        // int8 codes (the int8 tc layout: 32-position chunks)
};

// Row tiles of one segment, and of all the launch's segments.
__host__ __device__ inline int64_t segment_tiles(const TcSegment& sg) { return (sg.n + kTcRows - 1) / kTcRows; }
__host__ __device__ inline int64_t tc_tiles(const QgemvTcArgs& a) {
  const TcSegment& last = a.seg[a.segments - 1];
  return last.first_tile + segment_tiles(last);
}

// The segment holding global row tile `tile`.
__device__ __forceinline__ int tc_segment_of(const QgemvTcArgs& a, int64_t tile) {
  int si = 0;
  while (si + 1 < a.segments && tile >= a.seg[si + 1].first_tile) ++si;
  return si;
}

// Output element idx (< kTiles · 128) of row tile `row_tile`, input rows from m0: the kWarps warps'
// partial sums of D fragment element e of lane ln in n8 tile j (row g + 8 (e >> 1), input row
// 8j + 2t + (e & 1)), added in warp order, plus the bias or (accumulate) the stored value.
template <typename T, int kWarps, int kTiles>
__device__ __forceinline__ void tc_store_output(const QgemvTcArgs& a, const TcSegment& sg, int64_t row_tile, int64_t m0,
                                                const float (&part)[kWarps][kTiles][4][32], int idx) {
  const int j = idx / 128, e = (idx / 32) % 4, ln = idx % 32;
  const int64_t row = row_tile * kTcRows + (ln >> 2) + 8 * (e >> 1);
  const int64_t m = m0 + 8 * j + 2 * (ln & 3) + (e & 1);
  if (row >= sg.n || m >= a.m) return;
  float v = 0.f;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) v += part[w][j][e][ln];
  T* o = static_cast<T*>(sg.out) + m * sg.n + row;
  *o = from_f32<T>(v + (sg.bias != nullptr ? load_any(sg.bias, a.bias_dtype, row) : 0.f) +
                   (a.accumulate ? to_f32(*o) : 0.f));
}

template <typename T> __device__ __forceinline__ uint32_t tc_magic();
template <> __device__ __forceinline__ uint32_t tc_magic<__half>() { return 0x64006400u; }         // 1024, 1024
template <> __device__ __forceinline__ uint32_t tc_magic<__nv_bfloat16>() { return 0x43004300u; }  // 128, 128
// (a & kMask) | magic as one LOP3: written out because the compiler emits an AND and an OR when
// both constants are immediates (a LOP3 takes one), twice the instructions of the conversion.
template <uint32_t kMask>
__device__ __forceinline__ uint32_t masked_or(uint32_t a, uint32_t magic) {
  uint32_t d;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(d) : "r"(a), "n"(kMask), "r"(magic));
  return d;
}
// The codes at bits 0-3 and 16-19 into the two 16-bit halves of magic.
__device__ __forceinline__ uint32_t nibbles_or(uint32_t a, uint32_t magic) { return masked_or<0x000F000Fu>(a, magic); }

template <typename T> struct Pair;
template <> struct Pair<__half> { using type = __half2; };
template <> struct Pair<__nv_bfloat16> { using type = __nv_bfloat162; };

// a - b on two packed 16-bit values of type T.
template <typename T>
__device__ __forceinline__ uint32_t sub2(uint32_t a, uint32_t b) {
  using P = typename Pair<T>::type;
  const P r = __hsub2(*reinterpret_cast<const P*>(&a), *reinterpret_cast<const P*>(&b));
  return *reinterpret_cast<const uint32_t*>(&r);
}

__device__ __forceinline__ float sz_scale(uint32_t sz) { return __half2float(__ushort_as_half(static_cast<unsigned short>(sz & 0xffffu))); }
// The pair (magic + z, magic + z) of a scale/zero word: z is a small integer (< 16), and 1024 + z
// (f16) / 128 + z (bf16) have the bits of the magic plus z (the mantissa's last place is 1 there).
template <typename T>
__device__ __forceinline__ uint32_t zero_pair(uint32_t sz) {
  const uint32_t z = static_cast<uint32_t>(__half2int_rn(__ushort_as_half(static_cast<unsigned short>(sz >> 16))));
  return tc_magic<T>() + z * 0x00010001u;
}

// Act-order x at positions p .. p+3 of one input row, read through perm, as the B fragment pair of
// one step (b0 = positions p, p+1; b1 = p+2, p+3; the lower position in the low half); xrow: [K]
// 16-bit values. p is a multiple of 4.
__device__ __forceinline__ uint2 x_quad_gather(const unsigned short* xrow, const int32_t* perm, int p) {
  const int4 col = __ldg(reinterpret_cast<const int4*>(perm + p));
  const uint32_t v0 = col.x >= 0 ? __ldg(xrow + col.x) : 0u, v1 = col.y >= 0 ? __ldg(xrow + col.y) : 0u;
  const uint32_t v2 = col.z >= 0 ? __ldg(xrow + col.z) : 0u, v3 = col.w >= 0 ? __ldg(xrow + col.w) : 0u;
  return make_uint2(v0 | (v1 << 16), v2 | (v3 << 16));
}

// Independent mma accumulator chains per chunk: with one n8 tile, consecutive k16 steps alternate
// between two D fragments so that an mma does not wait for the previous one's result (the chain
// of four dependent mma latencies per chunk is the single-tile kernel's critical path); more
// tiles already give the warp independent mmas.
template <int kTiles> inline constexpr int kTcChains = kTiles == 1 ? 2 : 1;

// acc += s · Σ_c d[c] for the D fragments of every n8 tile (rows g: s_lo, rows g + 8: s_hi), then d = 0.
template <int kTiles, int kChains>
__device__ __forceinline__ void scale_into(float (&acc)[kTiles][4], float (&d)[kChains][kTiles][4], float s_lo,
                                           float s_hi) {
#pragma unroll
  for (int j = 0; j < kTiles; ++j) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      float v = d[0][j][e];
#pragma unroll
      for (int c = 1; c < kChains; ++c) v += d[c][j][e];
      acc[j][e] = fmaf(e < 2 ? s_lo : s_hi, v, acc[j][e]);
#pragma unroll
      for (int c = 0; c < kChains; ++c) d[c][j][e] = 0.f;
    }
  }
}

// The B fragments of one chunk's kSteps k16 steps (int4/NF4: 4, int8: 2) for each n8 tile: xb[j][s]
// holds positions p0 + 16s + 4t .. + 3 of tile j's x row (xr[j], already offset by 4t unless
// kGather, which reads x through perm). Separate from the multiply so that a caller can issue the
// loads of a later chunk before it waits for this one's codes (qgemv_stream.cu).
template <int kTiles, int kSteps, bool kGather>
__device__ __forceinline__ void tc_load_x(const unsigned short* const (&xr)[kTiles], const int32_t* perm, int p0, int t,
                                          uint2 (&xb)[kTiles][4]) {
#pragma unroll
  for (int s = 0; s < kSteps; ++s)
#pragma unroll
    for (int j = 0; j < kTiles; ++j)  // one pointer per chunk, steps at immediate offsets
      xb[j][s] = kGather ? x_quad_gather(xr[j], perm, p0 + 16 * s + 4 * t)
                         : __ldg(reinterpret_cast<const uint2*>(xr[j] + p0) + 4 * s);
}

// One 64-position chunk: four k16 steps of mma per n8 tile; sz = scale/zero words of rows g, g+8
// (kSplit, group size 32: for each half of the chunk); xb: its B fragments (tc_load_x).
// kNF4: a fragment register is the pair of levels of its two codes, looked up in nf4_pairs (256
// entries, one per code byte: level[low nibble] in the low half); sz holds f32 absmax bits.
template <typename T, int kTiles, bool kSplit, bool kNF4, bool kZeroByMma = false>
__device__ __forceinline__ void tc_chunk(const uint4& w, const uint32_t* sz, const uint2 (&xb)[kTiles][4],
                                         const uint32_t* nf4_pairs, float (&acc)[kTiles][4]) {
  const uint32_t words[4] = {w.x, w.y, w.z, w.w};
  constexpr int kChains = kTcChains<kTiles>;
  // kZeroByMma (the streaming kernel), one n8 tile of int4: the zero point by a second mma per
  // step (A = −(magic + z)) instead of a packed subtraction per fragment register:
  // Σ (magic + c)·x − (magic + z)·Σ x = Σ (c − z)·x, 4 mma for 16 subtractions per chunk. magic ± z
  // and magic + c are exact in T and the products exact in f32; the cancellation of magic·Σx costs
  // about 2^-24·magic·Σ|x| (bf16: 128, f16: 1024), far below the output's rounding. Measured on the
  // H100 (w4g128, M = 1): in the streaming kernel's 16-warp draft, together with incremental
  // addressing, down went 57 -> 60% and lm_head 64 -> 69% of HBM; alone in the per-lane kernel,
  // lm_head went 83 -> 77% (separate calls), so that kernel keeps the subtraction.
  constexpr bool kZeroMma = kZeroByMma && kTiles == 1 && !kNF4;
  float d[kChains][kTiles][4] = {};
  uint32_t z_lo = 0, z_hi = 0;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    if (!kNF4 && (h == 0 || kSplit)) {
      z_lo = zero_pair<T>(sz[2 * h]);
      z_hi = zero_pair<T>(sz[2 * h + 1]);
    }
#pragma unroll
    for (int s2 = 0; s2 < 2; ++s2) {
      const uint32_t word = words[2 * h + s2];
      uint32_t a[4];
      if constexpr (kNF4) {
#pragma unroll
        for (int q = 0; q < 4; ++q) a[q] = nf4_pairs[((word >> (4 * q)) & 0xFu) | ((word >> (4 * q + 12)) & 0xF0u)];
      } else if constexpr (kZeroMma) {
        a[0] = nibbles_or(word, tc_magic<T>());  // magic + c, as below without the subtraction
        a[1] = nibbles_or(word >> 4, tc_magic<T>());
        a[2] = nibbles_or(word >> 8, tc_magic<T>());
        a[3] = nibbles_or(word >> 12, tc_magic<T>());
      } else {
        a[0] = sub2<T>(nibbles_or(word, tc_magic<T>()), z_lo);        // row g,   positions 4t, 4t+1
        a[1] = sub2<T>(nibbles_or(word >> 4, tc_magic<T>()), z_hi);   // row g+8, positions 4t, 4t+1
        a[2] = sub2<T>(nibbles_or(word >> 8, tc_magic<T>()), z_lo);   // row g,   positions 4t+2, 4t+3
        a[3] = sub2<T>(nibbles_or(word >> 12, tc_magic<T>()), z_hi);  // row g+8, positions 4t+2, 4t+3
      }
#pragma unroll
      for (int j = 0; j < kTiles; ++j)
        mma::mma16816<T>(d[s2 % kChains][j], a, xb[j][2 * h + s2].x, xb[j][2 * h + s2].y);
      if constexpr (kZeroMma) {
        // −(magic + z) in every position of rows g / g + 8: the same step's x summed and scaled.
        const uint32_t zneg[4] = {z_lo ^ 0x80008000u, z_hi ^ 0x80008000u, z_lo ^ 0x80008000u, z_hi ^ 0x80008000u};
        mma::mma16816<T>(d[(s2 + 1) % kChains][0], zneg, xb[0][2 * h + s2].x, xb[0][2 * h + s2].y);
      }
    }
    if (h == 1 || kSplit) {
      const int i = kSplit ? 2 * h : 0;  // without kSplit, sz holds the words of the first half only
      scale_into(acc, d, kNF4 ? __uint_as_float(sz[i]) : sz_scale(sz[i]),
                 kNF4 ? __uint_as_float(sz[i + 1]) : sz_scale(sz[i + 1]));
    }
  }
}

// int8: one 32-position chunk, two k16 steps; word 2s holds row g's codes of step s, word 2s + 1
// row g + 8's (quant_repack.h). A register is (c - z) of two codes: f16 through the bits of 1024 + c
// (one byte permute, one packed subtraction); bf16, whose 8 significant bits cannot hold 128 + c, through
// f32 (2^23 + c by a byte permute, minus 2^23 + z, exact) and one packing conversion (|c - z| <= 255
// is exact in bf16). sz: the scale/zero words of rows g and g + 8 (a chunk lies in one group).
template <typename T, int kTiles>
__device__ __forceinline__ void tc_chunk8(const uint4& w, const uint32_t* sz, const uint2 (&xb)[kTiles][4],
                                          float (&acc)[kTiles][4]) {
  const uint32_t words[4] = {w.x, w.y, w.z, w.w};
  constexpr int kChains = kTcChains<kTiles>;
  float d[kChains][kTiles][4] = {};
  // out[0]: (c - z) of bytes 0-1 of `word`, out[1]: of bytes 2-3.
  auto pairs = [](uint32_t word, uint32_t szw, uint32_t (&out)[2]) {
    if constexpr (std::is_same_v<T, __half>) {
      const uint32_t z2 = zero_pair<T>(szw);  // 1024 + z in both halves
      out[0] = sub2<T>(__byte_perm(word, 0x64646464u, 0x5150), z2);
      out[1] = sub2<T>(__byte_perm(word, 0x64646464u, 0x5352), z2);
    } else {
      const float zf = 8388608.f + __half2float(__ushort_as_half(static_cast<unsigned short>(szw >> 16)));
      auto f = [&](uint32_t sel) { return __uint_as_float(__byte_perm(word, 0x4B00u, sel)) - zf; };
      out[0] = mma::pack2<T>(f(0x5440), f(0x5441));
      out[1] = mma::pack2<T>(f(0x5442), f(0x5443));
    }
  };
#pragma unroll
  for (int s = 0; s < 2; ++s) {
    uint32_t lo[2], hi[2];
    pairs(words[2 * s], sz[0], lo);
    pairs(words[2 * s + 1], sz[1], hi);
    const uint32_t a[4] = {lo[0], hi[0], lo[1], hi[1]};
#pragma unroll
    for (int j = 0; j < kTiles; ++j) mma::mma16816<T>(d[s % kChains][j], a, xb[j][s].x, xb[j][s].y);
  }
  scale_into(acc, d, sz_scale(sz[0]), sz_scale(sz[1]));
}

// 16 bytes of codes, read past L1 (ld.global.nc.L1::no_allocate): each byte is used once, and
// streaming them through L1 would evict x, which every warp of the SM re-reads.
__device__ __forceinline__ uint4 load_codes(const uint4* p) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p));
  return v;
}

}  // namespace qtc

// Input rows up to which tensor-core launches stream their weights (qgemv_stream.cu).
inline constexpr int64_t kQgemvStreamMaxRows = 16;

// Launches the streaming kernel (qgemv_stream.cu) when it supports these arguments (a.m <=
// kQgemvStreamMaxRows, x read directly (a.perm unused), the scale/zero blocks fit its slots,
// streaming enabled); false: the caller launches the per-lane kernel.
template <typename T>
Result<bool> qgemv_stream_launch(const qtc::QgemvTcArgs& a, cudaStream_t stream);

}  // namespace compactor
