// The GPU-friendly layout of the intN formats ("repacked"), which the fused dequantize-and-multiply
// kernels (backend/cuda/qgemv.cuh) read, and its scalar host reference. The storage layout of
// quant_pack.h packs codes down each output column (GPTQ: qweight [W(K), N]), which suits a thread
// per output column; the fused GEMV gives each output row to a warp whose lanes stream along K in
// 16-byte loads, so the codes of one output row must be contiguous.
//
// Repacked tensors of an [N, K] linear (Kp = K rounded up to kRepackTileK = 128, B = bits):
//   qweight     u32 [N, Kp*B/32]  row n = Kp/32 blocks of B words; block b holds the codes of
//                                  positions p = 32b .. 32b+31 (padding positions hold code 0)
//   scale_zero  u32 [N, Gp]       per (row, group): f16 scale in bits 0-15, the zero point as an
//                                  f16 in bits 16-31; Gp = Kp / group_size (1 per-channel);
//                                  groups past the real ones are 0 (scale 0, zero 0)
//   perm        i32 [Kp]          act-order only: position p holds input column perm[p]
//                                  (-1 for padding); else position p is column p (p < K)
// Position p belongs to group p / group_size: with act-order the columns are sorted by g_idx
// (stably), which is exactly this when every group has group_size members (GPTQ's desc_act);
// other g_idx are not repackable (plan_repack says so and the caller keeps the dequant path).
// The kernel gathers x by perm, so y = x · dq(w)ᵀ is unchanged. group_size must be 0 or a power
// of two >= 32, so that a 32-code block never straddles two groups.
//
// Bit layout of one 32-code block (code i = code of position 32b + i, c_i):
//   B = 2, 4, 8: little-endian stream, c_i at bits (i*B) % 32 of word (i*B) / 32 (as GPTQ, but
//                along the row). int4, word j:
//                  bit 31      28 27      24        7       4 3       0
//                     +----------+----------+- ... -+----------+----------+
//                     | c(8j+7)  | c(8j+6)  |       | c(8j+1)  |  c(8j)   |
//                     +----------+----------+- ... -+----------+----------+
//   B = 3:       no code straddles two words; word j (0..2) holds c(10j+i) at bits 3i..3i+2
//                (i = 0..9), and its bits 30-31 hold bits 2j, 2j+1 of the 6-bit value
//                t = c30 | c31 << 3:
//                  bit 31 30 29    27 26  ...  5     3 2     0
//                     +-----+--------+-- ... --+--------+--------+
//                     | t.. | c(10j+9)|   ...  | c(10j+1)| c(10j) |
//                     +-----+--------+-- ... --+--------+--------+
// Why these layouts: a code at bits [s, s+B) with s + B <= 23 sits inside an f32 mantissa, so
// the kernel turns it into a float with one AND-OR against 0x4B000000 (2^23) and one FMA, no shift
// and no int-to-float conversion (qgemv.cu explains the arithmetic).
//
// Test: build-*/tests/test_quant_repack (round trip pack -> repack -> unpack for 2/3/4/8 bits).
#pragma once

#include <cstdint>
#include <vector>

#include "core/status.h"
#include "formats/quant.h"
#include "formats/quant_pack.h"

namespace compactor {

inline constexpr int kRepackBlockK = 32;   // codes per block (one group at most)
inline constexpr int kRepackTileK = 128;   // K is padded to a multiple of this

// Sizes of the repacked tensors of one linear.
struct RepackPlan {
  int bits = 4;
  int group_size = 0;      // 0 = per-channel
  int group_shift = 31;    // position p is in group p >> group_shift (31 per-channel)
  int64_t n = 0;           // N
  int64_t k = 0;           // K
  int64_t k_padded = 0;    // Kp
  int64_t words_per_row = 0;  // Kp * bits / 32
  int64_t groups_padded = 0;  // Gp
  bool permuted = false;      // act-order: perm is needed
  // NF4 (formats/nf4.h): the codes (bits 4, row layout as int4) index kNF4Values, group_size is the
  // NF4 block, and scale_zero[n, g] holds the f32 bits of the block's absmax (double quantization
  // undone at repack time) instead of f16 scale | f16 zero.
  bool nf4 = false;
};

// The plan for an [n, k] linear of these bits and group size; `g_idx` (host, [k], or nullptr)
// fills `perm` ([Kp]) when given. Unsupported (with the reason) for group sizes that are not 0 or
// a power of two >= 32, and for a g_idx whose groups do not all have group_size members.
Result<RepackPlan> plan_repack(int bits, int group_size, int64_t n, int64_t k, const int32_t* g_idx,
                               std::vector<int32_t>* perm);

// Host copies of the repacked tensors (the spec the CUDA repack is compared with byte for byte).
struct RepackedLinear {
  RepackPlan plan;
  std::vector<uint32_t> qweight;     // [N, words_per_row]
  std::vector<uint32_t> scale_zero;  // [N, Gp]
  std::vector<int32_t> perm;         // [Kp]; empty unless plan.permuted
};

Result<RepackedLinear> repack_linear_ref(const PackedRef& p);

// The inverse, back to the unpacked form in the original column order (g_idx rebuilt from perm
// when act-order; scales widened from f16). unpack_repacked_ref(repack(pack(q))) == q.
QuantizedLinear unpack_repacked_ref(const RepackedLinear& r, bool symmetric = false);

#ifndef COMPACTOR_HOST_DEVICE
#define COMPACTOR_HOST_DEVICE
#endif

// Packs the 32 codes of one block into `bits` words (layout above). codes: [32]; words: [bits]
COMPACTOR_HOST_DEVICE inline void pack_repacked_block(const uint32_t* codes, int bits, uint32_t* words) {
  for (int j = 0; j < bits; ++j) words[j] = 0;
  if (bits == 3) {
    const uint32_t t = codes[30] | (codes[31] << 3);
    for (int j = 0; j < 3; ++j) {
      for (int i = 0; i < 10; ++i) words[j] |= codes[10 * j + i] << (3 * i);
      words[j] |= ((t >> (2 * j)) & 3u) << 30;
    }
    return;
  }
  for (int i = 0; i < 32; ++i) words[(i * bits) >> 5] |= codes[i] << ((i * bits) & 31);
}

// Code i (0..31) of a block whose `bits` words start at `words`.
COMPACTOR_HOST_DEVICE inline uint32_t repacked_code(const uint32_t* words, int bits, int i) {
  if (bits == 3) {
    if (i < 30) return (words[i / 10] >> (3 * (i % 10))) & 7u;
    const uint32_t t = (words[0] >> 30) | ((words[1] >> 30) << 2) | ((words[2] >> 30) << 4);
    return i == 30 ? (t & 7u) : (t >> 3);
  }
  return (words[(i * bits) >> 5] >> ((i * bits) & 31)) & ((1u << bits) - 1u);
}

// ---- tensor-core layout of int4 (backend/cuda/qgemv_tc.cu) ----
// The codes of 16 output rows × 64 positions form one 512-byte tile, in the order the
// mma.m16n8k16 A fragment wants them (g = lane / 4, t = lane % 4): lane L = 4g + t owns bytes
// 16L .. 16L+15, word s (0..3) of those is k16 step s (positions 16s .. 16s+15 of the tile). The
// mma's k index is mapped to positions so that lane t's part of every step is 4 consecutive
// positions: k = 2t, 2t+1 -> positions 16s + 4t, +1 and k = 2t+8, 2t+9 -> 16s + 4t + 2, +3. Then
// the B fragment of a lane (x at those positions) is one 8-byte load, and (the product summing over
// k) the result is unchanged. The nibbles of word s hold four pairs of codes:
//   pair 0 = (row g,   positions 4t, 4t+1)     pair 1 = (row g+8, positions 4t, 4t+1)
//   pair 2 = (row g,   positions 4t+2, 4t+3)   pair 3 = (row g+8, positions 4t+2, 4t+3)
//   word s:  bit 31  28 27  24 23  20 19  16 15  12 11   8 7    4 3    0
//               +------+------+------+------+------+------+------+------+
//               | p3.b | p2.b | p1.b | p0.b | p3.a | p2.a | p1.a | p0.a |   a = first, b = second position
//               +------+------+------+------+------+------+------+------+
// so (word >> 4p) & 0x000F000F puts pair p's codes at bits 0 and 16: OR-ing the f16 (bf16) bits of
// 1024 (128) makes the half2 (1024 + a, 1024 + b), a register of the A fragment after one
// subtraction of 1024 + zero. Tiles are ordered [N/16 row tiles][Kp/64 chunks]; rows past N are
// padding (code 0). Positions are the repacked ones (act-order permutation applied). A step never
// straddles a 32-position group, so per-group scales can be applied to the f32 products.
//
// int8 (the same kernel, 16-row × 32-position tiles of 512 bytes, 2 k16 steps, the same k mapping):
// lane L = 4g + t owns bytes 16L .. 16L+15; word 2s + h (s = step 0..1, h = 0..1) holds the codes of
// row g + 8h at positions 16s + 4t .. 16s + 4t + 3, byte i = position 16s + 4t + i:
//   word 2s + h:  bit 31   24 23   16 15    8 7     0
//                    +-------+-------+-------+-------+
//                    | p+3   | p+2   | p+1   | p     |   p = 16s + 4t, row g + 8h
//                    +-------+-------+-------+-------+
// so bytes 0-1 are the A register (row g + 8h, k = 2t, 2t+1) and bytes 2-3 the one at k = 2t+8, 2t+9.
inline constexpr int kTcRows = 16;
inline constexpr int kTcChunkK = 64;   // int4 (and NF4) positions per tile
inline constexpr int kTcChunkK8 = 32;  // int8 positions per tile

// Whether a linear takes a tensor-core layout (backend/cuda/qgemv_tc.cu): int4; NF4 with blocks
// of at least one 64-position tile; int8 without act-order (the kernel gathers x for int4 only).
// The one rule the repack, the kernel's checks, the backend and the memory plan follow.
inline bool tc_layout_supported(int bits, bool nf4, int group_size, bool act_order) {
  if (bits == 4) return !nf4 || (group_size >= kTcChunkK && !act_order);
  return bits == 8 && !nf4 && !act_order;
}

// Rows padded to whole tiles; positions per tile and tiles per row tile for a bit width (4 or 8).
inline int64_t tc_padded_rows(int64_t n) { return (n + kTcRows - 1) / kTcRows * kTcRows; }
COMPACTOR_HOST_DEVICE inline int tc_chunk_positions(int bits) { return bits == 8 ? kTcChunkK8 : kTcChunkK; }
inline int64_t tc_chunks(const RepackPlan& plan) { return plan.k_padded / tc_chunk_positions(plan.bits); }

// The (row, position) of byte q (0..3) of int8 tc word `word`.
COMPACTOR_HOST_DEVICE inline void tc_int8_source(int64_t word, int q, int64_t chunks, int64_t* row, int64_t* pos) {
  const int w = static_cast<int>(word & 3);
  const int lane = static_cast<int>((word >> 2) & 31);
  const int64_t tile = word >> 7;  // row tile * chunks + chunk
  const int64_t row_tile = tile / chunks, chunk = tile - row_tile * chunks;
  const int g = lane >> 2, t = lane & 3, s = w >> 1, h = w & 1;
  *row = row_tile * kTcRows + g + 8 * h;
  *pos = chunk * kTcChunkK8 + 16 * s + 4 * t + q;
}

// The (row, position) of nibble q (0..7) of tc word `word` (u32 index into the layout).
COMPACTOR_HOST_DEVICE inline void tc_int4_source(int64_t word, int q, int64_t chunks, int64_t* row, int64_t* pos) {
  const int s = static_cast<int>(word & 3);
  const int lane = static_cast<int>((word >> 2) & 31);
  const int64_t tile = word >> 7;  // row tile * chunks + chunk
  const int64_t row_tile = tile / chunks, chunk = tile - row_tile * chunks;
  const int g = lane >> 2, t = lane & 3, p = q & 3, second = q >> 2;
  *row = row_tile * kTcRows + g + 8 * (p & 1);
  *pos = chunk * kTcChunkK + 16 * s + 4 * t + 2 * (p >> 1) + second;
}

// Host reference: the tc words [tc_padded_rows(N) * Kp * bits / 32] of an int4 or int8 linear from
// its row layout.
std::vector<uint32_t> repack_tc_ref(const RepackedLinear& r);
// Code at (row, position) of an int4 or int8 tc layout (the inverse, for tests).
uint32_t tc_code(const std::vector<uint32_t>& tc, int bits, int64_t chunks, int64_t row, int64_t pos);

}  // namespace compactor
