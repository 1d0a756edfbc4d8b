// Mixed-input GEMM for prefill-sized batches on Hopper tensor cores (wgmma, sm_90a): y[M, N] =
// x[M, K] · dq(W)ᵀ with W's int4 codes read from the tc layout (formats/quant_repack.h) and turned
// into wgmma A fragments in registers, so the weights cross memory once, at half a byte each,
// instead of the dequantize + cuBLAS path's 0.5 (read) + 2 (write) + 2 (read) bytes.
//
// Block: 3 warpgroups, warp-specialised. Warps 0-7 (two consumer warpgroups, warp w: row tile w,
// the A rows of warpgroup w / 4) multiply 128 output rows by kTokens input rows (the wgmma N:
// 256, or 128 where that fills the GPU better); one thread of warp 8 copies. All of the block's
// K goes in 64-position chunks through a ring of as many stages as shared memory holds (6 at
// 256 tokens), each with a `full` (copies landed) and an `empty` (multiplies done) mbarrier, and
// no block-wide barrier in the loop:
//   x:     [kTokens, 64] by one TMA tensor copy, K-major with the 128-byte swizzle wgmma reads
//          (wgmma.cuh); rows past M zero-filled.
//   codes: the block's 8 row tiles × one chunk (4 KB of the tc layout) by one TMA tensor copy
//          (rows past the segment zero-filled; blocks never straddle the segments of a grouped
//          launch, block_place).
//   sz:    each lane loads its two rows' scale/zero words itself (__ldg), one chunk ahead.
// The tc layout gives lane t of a k16 step the k pairs 2t and 2t + 1 (positions 4t .. 4t+3, so
// that the GEMV's B fragment is one load; quant_repack.h); wgmma wants pairs t and t + 4 in lane
// t, with B in position order. A lane reads the two lanes' words that hold its pairs (pair P lives
// in lane P / 2, half P % 2 of its word; two 16-byte shared loads per chunk, no shuffles), so x is
// copied as stored.
// Per chunk a warp converts its 4 × 4 A registers exactly as the dequantize kernel does (bf16:
// (c − z)·s in f32, rounded once to bf16; f16: one rounding of the exact product), so results
// match dequantize + cuBLAS up to the order of the f32 sums. The conversion of chunk c + 1 runs
// while the tensor cores multiply chunks c − 1 and c (A double-buffered in registers), and one
// warpgroup converts while the other's multiply holds the tensor cores. The outputs leave through
// shared memory as 16-byte rows (emit_outputs).
// Split K: where a launch has too few tiles to fill the GPU (a 4096-row weight at 512 tokens: 64
// tiles for 132 SMs), the grid's z splits each tile's chunks over a cluster of gridDim.z blocks;
// each stages its f32 partial tile in its own shared memory and, after a cluster barrier, writes
// its slice of the tile's tokens summed over the cluster's tiles (distributed shared memory): no
// workspace, no flags between launches, the same bits whichever block finishes first. Tokens per
// block and splits come from a cost model (qgemm_plan.h).
// Measured (H100, w4g128): bench/results/NVIDIA-H100-80GB-HBM3-ncu-notes.md ("Seventh session").
// Test: build-*/tests/test_cuda_qgemm (on a GPU machine). Bench: build-*/bench/bench_qgemm.
#include <cuda.h>
#include <cudaTypedefs.h>

#include <atomic>
#include <mutex>

#include "backend/cuda/bulk_copy.cuh"
#include "backend/cuda/launch.cuh"
#include "backend/cuda/mma.cuh"
#include "backend/cuda/qgemm_plan.h"
#include "backend/cuda/qgemm_wgmma.cuh"
#include "backend/cuda/qgemv.cuh"
#include "backend/cuda/wgmma.cuh"

namespace compactor {

using namespace qtc;  // the launch arguments and conversion helpers (qgemv_tc_chunk.cuh)

namespace {

constexpr int kConsumerWarps = 8;                     // 2 warpgroups, one 16-row tile per warp
constexpr int kConsumerThreads = 32 * kConsumerWarps;
constexpr int kThreads = kConsumerThreads + 128;      // + the producer warpgroup (one thread copies)
constexpr int kBlockRows = kConsumerWarps * kTcRows;  // 128
constexpr int kXRowBytes = kTcChunkK * 2;             // one token's 64 positions
static_assert(kXRowBytes == 128, "one 128-byte swizzle row per token and chunk");
constexpr int kWTileWords = 32 * 4;                   // one row tile's chunk in the tc layout (u32)
constexpr int kOutPitch = kBlockRows + 4;             // f32 output staging row: + 4 spreads the banks
// Shared memory a block may take (H100: 227 KB), less the slack to align the ring.
constexpr size_t kSmemBudget = 227 * 1024 - 1024;
// Bytes one stage's copies bring: the x tile and the 8 row tiles' codes.
template <int kTokens>
constexpr uint32_t kStageBytes = kTokens * kXRowBytes + kConsumerWarps * kWTileWords * 4;
// Stages of the ring: those bytes and two barriers each.
template <int kTokens>
constexpr int kRingStages = static_cast<int>(kSmemBudget / (kStageBytes<kTokens> + 2 * sizeof(uint64_t)));

// kTokens: input rows per block, the wgmma N (128 or 256).
template <int kTokens>
struct GemmSmem {
  uint8_t x[kRingStages<kTokens>][kTokens * kXRowBytes];  // first: each stage 1024-byte aligned
  uint4 w[kRingStages<kTokens>][kConsumerWarps][32];       // [row tile][lane]: one tensor copy
  uint64_t full[kRingStages<kTokens>];   // the stage's x and codes landed (tensor copy bytes)
  uint64_t empty[kRingStages<kTokens>];  // every consumer warp is done with the stage
};
template <int kTokens>
constexpr size_t kSmemBytes = sizeof(GemmSmem<kTokens>) + 1024;  // + slack to align the dynamic base

// The tensor maps of one launch: x ([M, ldx], 128-byte swizzled boxes of [kTokens, 64]) and
// each segment's codes ([row tiles, chunks · 128] u32, boxes of 8 row tiles × one chunk).
struct GemmMaps {
  CUtensorMap x;
  CUtensorMap w[kQgemvMaxGroup];
};

std::atomic<bool>& wgmma_flag() {
  static std::atomic<bool> on{false};
  return on;
}
std::atomic<int>& forced_tokens() {  // set_qgemm_wgmma_plan
  static std::atomic<int> tokens{0};
  return tokens;
}
std::atomic<int>& forced_splits() {
  static std::atomic<int> splits{0};
  return splits;
}

template <int kRegisters>
__device__ __forceinline__ void raise_registers() {
#ifdef COMPACTOR_WGMMA
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(kRegisters));
#endif
}
template <int kRegisters>
__device__ __forceinline__ void lower_registers() {
#ifdef COMPACTOR_WGMMA
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(kRegisters));
#endif
}

// A block's place: its segment and first row tile there. Blocks never straddle segments, so one
// tensor copy brings all of a block's codes.
__host__ __device__ inline int64_t segment_blocks(const TcSegment& sg) {
  return (segment_tiles(sg) + kConsumerWarps - 1) / kConsumerWarps;
}
struct BlockPlace {
  int seg;
  int64_t tile0;
};
__device__ __forceinline__ BlockPlace block_place(const QgemvTcArgs& a, int64_t block) {
  int si = 0;
  while (si + 1 < a.segments && block >= segment_blocks(a.seg[si])) block -= segment_blocks(a.seg[si++]);
  return {si, block * kConsumerWarps};
}

// The chunks of K a block multiplies: all of them, or where the launch splits K over a cluster
// (gridDim.z blocks per tile; qgemm_plan.h), block z's share.
struct ChunkRange {
  int first;
  int count;
};
__device__ __forceinline__ ChunkRange chunk_range(int chunks, int split, int splits) {
  const int first = static_cast<int>(static_cast<int64_t>(chunks) * split / splits);
  return {first, static_cast<int>(static_cast<int64_t>(chunks) * (split + 1) / splits) - first};
}

// One thread copies: each chunk's codes (constant inputs: the first stages before the wait for the
// previous kernel) and x tile, into the stage its consumers last released.
template <int kTokens>
__device__ __forceinline__ void produce(const QgemvTcArgs& a, const GemmMaps& maps, GemmSmem<kTokens>& sm,
                                        int64_t m0, BlockPlace bp, ChunkRange range) {
  constexpr int kStages = kRingStages<kTokens>;
  const CUtensorMap* w_map = &maps.w[bp.seg];
  const int tile0 = static_cast<int>(bp.tile0), row0 = static_cast<int>(m0);
  // c: the block's chunk c, chunk range.first + c of K.
  const auto copy_w = [&](int c, int s) {
    bulk::arrive_expect_bytes(&sm.full[s], kStageBytes<kTokens>);  // rows past N / M count: zero-filled
    bulk::copy_tensor_2d(sm.w[s], w_map, (range.first + c) * kWTileWords, tile0, &sm.full[s]);
  };
  const auto copy_x = [&](int c, int s) {
    bulk::copy_tensor_2d(sm.x[s], &maps.x, (range.first + c) * kTcChunkK, row0, &sm.full[s]);
  };
  const int first = range.count < kStages ? range.count : kStages;
  for (int c = 0; c < first; ++c) copy_w(c, c);
  wait_for_prior_grids();
  for (int c = 0; c < first; ++c) copy_x(c, c);
  int s = 0;
  for (int c = kStages; c < range.count; ++c) {
    bulk::wait(&sm.empty[s], static_cast<uint32_t>(c / kStages - 1) & 1u);
    copy_w(c, s);
    copy_x(c, s);
    s = s + 1 == kStages ? 0 : s + 1;
  }
}

// One scale/zero word, ready for the conversion.
struct Dq {
  uint32_t zero;     // f16: (1024 + z) pair
  uint32_t scale2;   // f16: (scale, scale) pair
  float scale;       // bf16: f32 scale
  float neg_zero16;  // bf16: −(128 + z)·s, for a code at bits 16-19 of the f32 128 (8 × 11 bits: exact)
  float neg_zero12;  // bf16: −(2048 + z)·s, for a code at bits 12-15 of the f32 2048 (12 × 11 bits: exact)
};
template <typename T>
__device__ __forceinline__ Dq dq_of(uint32_t sz) {
  const float s = sz_scale(sz);
  const float z = static_cast<float>(__half2int_rn(__ushort_as_half(static_cast<unsigned short>(sz >> 16))));
  return Dq{zero_pair<T>(sz), (sz & 0xffffu) * 0x00010001u, s, -(128.f + z) * s, -(2048.f + z) * s};
}

// bf16: (c − z)·s of the codes c at bits 16-19 and 12-15 of u, in f32. A code at bits 16-19 ORed
// into the f32 128 (0x43000000, last place 2^-16) gives 128 + c, one at bits 12-15 ORed into 2048
// (0x45000000, last place 2^-12) gives 2048 + c; (m + c)·s − (m + z)·s in one fma is (c − z)·s,
// exact in f32, so the A value is rounded once (to bf16), as the dequantize kernel rounds it.
__device__ __forceinline__ float dq_bits16(uint32_t u, const Dq& q) {
  return fmaf(__uint_as_float(masked_or<0x000F0000u>(u, 0x43000000u)), q.scale, q.neg_zero16);
}
__device__ __forceinline__ float dq_bits12(uint32_t u, const Dq& q) {
  return fmaf(__uint_as_float(masked_or<0x0000F000u>(u, 0x45000000u)), q.scale, q.neg_zero12);
}

// The scale/zero words a lane needs for one chunk: rows g and g + 8 of its warp's tile, for the
// chunk's group (two groups at group size 32: [half of the chunk]).
struct SzWords {
  uint32_t lo[2], hi[2];
};

// Where a lane reads them: its two rows' scale/zero rows (rows past N read row N − 1; their
// outputs are never stored).
struct SzRows {
  const uint32_t* lo;
  const uint32_t* hi;
};

template <bool kSplit>
__device__ __forceinline__ SzWords load_sz(const SzRows& r, int c, int group_shift) {
  const int group = (c * kTcChunkK) >> group_shift;
  SzWords w;
  w.lo[0] = __ldg(r.lo + group);
  w.hi[0] = __ldg(r.hi + group);
  w.lo[1] = kSplit ? __ldg(r.lo + group + 1) : w.lo[0];
  w.hi[1] = kSplit ? __ldg(r.hi + group + 1) : w.hi[0];
  return w;
}

// The A registers (row g, row g + 8) of one wgmma k pair from the tc word w of the lane that
// holds it, whose byte `half` (0 or 1: the pair's first position) and byte half + 2 (its second)
// hold the pair's codes (row g in the low nibble, row g + 8 in the high; quant_repack.h).
// bf16: two byte permutes copy byte half to bytes 1-2 and byte half + 2 likewise, which puts each
// code at bits 16-19 (row g) or 12-15 (row g + 8), where dq_bits16 / dq_bits12 read it: no shifts.
struct PairSelect {
  uint32_t first, second;  // __byte_perm selectors (bf16)
  int shift;               // 8 · half (f16)
};
__device__ __forceinline__ PairSelect pair_select(int half) {
  return {static_cast<uint32_t>(half * 0x110), static_cast<uint32_t>((half + 2) * 0x110), 8 * half};
}
template <typename T>
__device__ __forceinline__ void dq_pair(uint32_t w, const PairSelect& sel, const Dq& lo, const Dq& hi,
                                        uint32_t& row_g, uint32_t& row_g8);
template <>
__device__ __forceinline__ void dq_pair<__nv_bfloat16>(uint32_t w, const PairSelect& sel, const Dq& lo, const Dq& hi,
                                                       uint32_t& row_g, uint32_t& row_g8) {
  const uint32_t first = __byte_perm(w, 0u, sel.first), second = __byte_perm(w, 0u, sel.second);
  row_g = mma::pack2<__nv_bfloat16>(dq_bits16(first, lo), dq_bits16(second, lo));
  row_g8 = mma::pack2<__nv_bfloat16>(dq_bits12(first, hi), dq_bits12(second, hi));
}
template <>
__device__ __forceinline__ void dq_pair<__half>(uint32_t w, const PairSelect& sel, const Dq& lo, const Dq& hi,
                                                uint32_t& row_g, uint32_t& row_g8) {
  // (a & 0x000F000F) | 1024-pair gives the halves (1024 + c) of both positions; − (1024 + z) is
  // exact, the product rounded once.
  const auto dq = [](uint32_t v, const Dq& q) {
    const uint32_t d = sub2<__half>(nibbles_or(v, tc_magic<__half>()), q.zero);
    const __half2 r = __hmul2(*reinterpret_cast<const __half2*>(&d), *reinterpret_cast<const __half2*>(&q.scale2));
    return *reinterpret_cast<const uint32_t*>(&r);
  };
  const uint32_t v = w >> sel.shift;
  row_g = dq(v, lo);
  row_g8 = dq(v >> 4, hi);
}

// This warp's A fragments of the chunk in stage s: a[step][register]. The tc layout gives lane t
// of a k16 step the positions 4t .. 4t+3 (the GEMV's order); wgmma wants k pairs t and t + 4 in
// lane t, with B in position order, so lane (g, t) reads the words of lanes 4g + t/2 (pair t) and
// 4g + t/2 + 2 (pair t + 4), half t % 2 of each: two 16-byte shared loads, and x copied as stored.
template <typename T, bool kSplit, int kTokens>
__device__ __forceinline__ void convert_chunk(const GemmSmem<kTokens>& sm, int s, const SzWords& sz,
                                              uint32_t (&a)[4][4]) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  // The source lane through an identity shuffle: with the index in plain arithmetic ptxas moves the
  // conversion between the next multiply's wgmmas and serialises them (C7515; found by trial, the
  // PTX differing only in the address arithmetic).
  const int src = __shfl_sync(0xffffffffu, 4 * g + t / 2, lane);
  const uint4 wl = sm.w[s][warp][src], wh = sm.w[s][warp][src + 2];
  const uint32_t words_lo[4] = {wl.x, wl.y, wl.z, wl.w}, words_hi[4] = {wh.x, wh.y, wh.z, wh.w};
  const PairSelect sel = pair_select(t & 1);
  Dq lo = dq_of<T>(sz.lo[0]), hi = dq_of<T>(sz.hi[0]);
#pragma unroll
  for (int st = 0; st < 4; ++st) {
    if (kSplit && st == 2) {  // group size 32: the second half of the chunk has its own group
      lo = dq_of<T>(sz.lo[1]);
      hi = dq_of<T>(sz.hi[1]);
    }
    dq_pair<T>(words_lo[st], sel, lo, hi, a[st][0], a[st][1]);  // rows g, g+8; k 2t, 2t+1
    dq_pair<T>(words_hi[st], sel, lo, hi, a[st][2], a[st][3]);  // rows g, g+8; k 2t+8, 2t+9
  }
}

__device__ __forceinline__ void pin(uint32_t (&a)[4][4]) {
#pragma unroll
  for (int st = 0; st < 4; ++st)
#pragma unroll
    for (int r = 0; r < 4; ++r) asm volatile("" : "+r"(a[st][r])::"memory");
}

// acc += A(chunk) · x(stage s)ᵀ: four k16 steps, 32 bytes apart in each swizzled x row.
template <typename T, int kTokens>
__device__ __forceinline__ void multiply_chunk(const GemmSmem<kTokens>& sm, int s, uint32_t (&a)[4][4],
                                               float (&acc)[kTokens / 2]) {
  const uint64_t desc = wgmma::desc_sw128(mma::smem_addr(sm.x[s]));
  wgmma::fence();
  wgmma::pin(acc);
#pragma unroll
  for (int st = 0; st < 4; ++st) wgmma::mma_m64k16<T, kTokens>(acc, a[st], desc + 2 * st);  // +32 bytes: +2 in >> 4 units
  wgmma::commit();
  wgmma::pin(acc);
}

// The f32 output tile [token][row] of a block, staged in its (drained) ring.
template <int kTokens>
__device__ __forceinline__ float (*output_tile(GemmSmem<kTokens>& sm))[kOutPitch] {
  static_assert(sizeof(float) * kTokens * kOutPitch <= sizeof(sm.x), "the f32 outputs fit the drained x ring");
  return reinterpret_cast<float(*)[kOutPitch]>(&sm.x[0][0]);
}

// The warps' accumulators into the output tile. acc element 4i + e is (row g + 8 (e >> 1), token
// 8i + 2t + (e & 1)) of the warp's tile (wgmma.cuh).
template <int kTokens>
__device__ __forceinline__ void stage_outputs(GemmSmem<kTokens>& sm, const float (&acc)[kTokens / 2]) {
  float(*tile)[kOutPitch] = output_tile(sm);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  bulk::named_sync(1, kConsumerThreads);  // both warpgroups' multiplies have read the ring
#pragma unroll
  for (int i = 0; i < kTokens / 8; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) tile[8 * i + 2 * t + (e & 1)][warp * kTcRows + g + 8 * (e >> 1)] = acc[4 * i + e];
  bulk::named_sync(1, kConsumerThreads);
}

// 8 rows (r8 ..) of token tk summed over the cluster's staged tiles, ranks 0, 1, ... in that order
// (parts > 1: distributed shared memory; 1: this block's tile alone). Every load is issued
// before the first add, so the remote latencies overlap.
__device__ __forceinline__ void gather8(const float (*tile)[kOutPitch], int parts, int tk, int r8, float (&v)[8]) {
  float4 lo[kGemmMaxSplits], hi[kGemmMaxSplits];
#pragma unroll
  for (int q = 0; q < kGemmMaxSplits; ++q) {
    if (q >= parts) break;
    const float* src = parts == 1 ? &tile[tk][r8] : bulk::cluster_map(&tile[tk][r8], q);
    lo[q] = *reinterpret_cast<const float4*>(src);
    hi[q] = *reinterpret_cast<const float4*>(src + 4);
  }
  v[0] = v[1] = v[2] = v[3] = v[4] = v[5] = v[6] = v[7] = 0.f;
#pragma unroll
  for (int q = 0; q < kGemmMaxSplits; ++q) {
    if (q >= parts) break;
    v[0] += lo[q].x, v[1] += lo[q].y, v[2] += lo[q].z, v[3] += lo[q].w;
    v[4] += hi[q].x, v[5] += hi[q].y, v[6] += hi[q].z, v[7] += hi[q].w;
  }
}

// One token's 8 outputs from rows `row` ..: + bias, + the stored values when accumulating, one
// rounding; 16-byte stores where `vec` (the 8 rows whole and aligned).
template <typename T>
__device__ __forceinline__ void write8(const QgemvTcArgs& a, const TcSegment& sg, int64_t m, int64_t row,
                                      float (&v)[8], const float (&bias)[8], bool vec) {
  if (m >= a.m || row >= sg.n) return;
#pragma unroll
  for (int j = 0; j < 8; ++j) v[j] += bias[j];
  T* o = static_cast<T*>(sg.out) + m * sg.n + row;
  if (vec) {
    if (a.accumulate) {
      float old[8];
      load8(o, old);
#pragma unroll
      for (int j = 0; j < 8; ++j) v[j] += old[j];
    }
    store8(o, v);
  } else {
    for (int j = 0; j < 8 && row + j < sg.n; ++j) o[j] = from_f32<T>(v[j] + (a.accumulate ? to_f32(o[j]) : 0.f));
  }
}

// Tokens [tk_begin, tk_end) of the block's outputs from the staged tile (parts > 1: the launch
// splits K over clusters of that many blocks; gather8), 8 rows per thread, two tokens at a time
// so that the second's loads overlap the first's.
template <typename T, int kTokens>
__device__ __forceinline__ void emit_outputs(const QgemvTcArgs& a, const float (*tile)[kOutPitch], int parts,
                                             BlockPlace bp, int64_t m0, int tk_begin, int tk_end) {
  const TcSegment& sg = a.seg[bp.seg];
  const int r8 = (threadIdx.x % (kBlockRows / 8)) * 8;  // this thread's 8 rows of the block
  const int64_t row = bp.tile0 * kTcRows + r8;
  // 16-byte stores where the 8 rows are whole and aligned (the output may be a view at any offset).
  const bool vec = sg.n % 8 == 0 && row + 8 <= sg.n && reinterpret_cast<uintptr_t>(sg.out) % 16 == 0;
  float bias[8];
#pragma unroll
  for (int j = 0; j < 8; ++j)
    bias[j] = sg.bias != nullptr && row + j < sg.n ? load_any(sg.bias, a.bias_dtype, row + j) : 0.f;
  constexpr int kTokensPerPass = kConsumerThreads / (kBlockRows / 8);  // 16
  for (int tk = tk_begin + threadIdx.x / (kBlockRows / 8); tk < tk_end; tk += 2 * kTokensPerPass) {
    const int tk2 = tk + kTokensPerPass;
    float v[8], w[8];
    gather8(tile, parts, tk, r8, v);
    if (tk2 < tk_end) gather8(tile, parts, tk2, r8, w);
    write8<T>(a, sg, m0 + tk, row, v, bias, vec);
    if (tk2 < tk_end) write8<T>(a, sg, m0 + tk2, row, w, bias, vec);
  }
}

// Stage s is free again for this warp.
template <int kTokens>
__device__ __forceinline__ void release(GemmSmem<kTokens>& sm, int s) {
  __syncwarp();
  if (threadIdx.x % 32 == 0) bulk::arrive(&sm.empty[s]);
}

// Chunk c (its A in a_mul, its x in stage s): issue its multiply, which queues behind chunk
// c − 1's on the tensor cores; once chunk c − 1's is done (one group stays in flight, so the
// tensor cores never drain while the next chunk converts) release its stage, then wait for chunk
// c + 1 and convert it into a_conv (chunk c − 1's A, free now) with the scale/zero words loaded
// one chunk ahead. The two warpgroups run this independently: one converts while the other's
// multiply holds the tensor cores.
template <typename T, bool kSplit, int kTokens>
__device__ __forceinline__ void consume_chunk(const QgemvTcArgs& a, GemmSmem<kTokens>& sm, const SzRows& rows,
                                              ChunkRange range, int c, int& s, SzWords& sz_next, uint32_t (&a_mul)[4][4],
                                              uint32_t (&a_conv)[4][4], float (&acc)[kTokens / 2]) {
  constexpr int kStages = kRingStages<kTokens>;
  multiply_chunk<T, kTokens>(sm, s, a_mul, acc);
  wgmma::wait<1>();
  wgmma::pin(acc);
  pin(a_conv);  // read by chunk c − 1's wgmma until here
  const int s_prev = s == 0 ? kStages - 1 : s - 1, s_next = s + 1 == kStages ? 0 : s + 1;
  if (c >= 1) release(sm, s_prev);
  if (c + 1 < range.count) {
    bulk::wait(&sm.full[s_next], static_cast<uint32_t>((c + 1) / kStages) & 1u);
    convert_chunk<T, kSplit, kTokens>(sm, s_next, sz_next, a_conv);
    if (c + 2 < range.count) sz_next = load_sz<kSplit>(rows, range.first + c + 2, a.group_shift);
  }
  s = s_next;
}

// The block's chunks, multiplied; their sums staged in the output tile (stage_outputs).
template <typename T, bool kSplit, int kTokens>
__device__ __forceinline__ void consume(const QgemvTcArgs& a, GemmSmem<kTokens>& sm, BlockPlace bp, ChunkRange range) {
  const int warp = threadIdx.x / 32, g = threadIdx.x % 32 / 4;
  const TcSegment& sg = a.seg[bp.seg];
  const int64_t r = (bp.tile0 + warp) * kTcRows + g, last = sg.n - 1;
  const SzRows rows{sg.scale_zero + (r < last ? r : last) * a.groups_padded,
                    sg.scale_zero + (r + 8 < last ? r + 8 : last) * a.groups_padded};
  SzWords sz_next = load_sz<kSplit>(rows, range.first, a.group_shift);
  wait_for_prior_grids();  // the outputs: an earlier kernel may still read (or, accumulating, write) them
  float acc[kTokens / 2];
#pragma unroll
  for (int i = 0; i < kTokens / 2; ++i) acc[i] = 0.f;
  uint32_t a0[4][4], a1[4][4] = {};  // A of even and odd chunks: unrolled by two, no register copies
  bulk::wait(&sm.full[0], 0);
  convert_chunk<T, kSplit, kTokens>(sm, 0, sz_next, a0);
  if (range.count > 1) sz_next = load_sz<kSplit>(rows, range.first + 1, a.group_shift);
  int s = 0;
  for (int c = 0; c < range.count; c += 2) {
    consume_chunk<T, kSplit, kTokens>(a, sm, rows, range, c, s, sz_next, a0, a1, acc);
    if (c + 1 < range.count) consume_chunk<T, kSplit, kTokens>(a, sm, rows, range, c + 1, s, sz_next, a1, a0, acc);
  }
  wgmma::wait<0>();
  wgmma::pin(acc);
  stage_outputs<kTokens>(sm, acc);
}

// Warp-specialised: warps 0-7 (two warpgroups) convert and multiply, one thread of warp 8 copies;
// they meet only at the stage barriers (full: copied; empty: multiplied).
template <typename T, bool kSplit, int kTokens>
__global__ void __launch_bounds__(kThreads, 1) qgemm_wgmma_kernel(const QgemvTcArgs a, const __grid_constant__ GemmMaps maps) {
  // The ring needs 1024-byte alignment (the swizzle pattern repeats every 8 rows of 128 bytes);
  // offsetting from the __shared__ symbol keeps the accesses in the shared window (LDS, not LD).
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  auto& sm = *reinterpret_cast<GemmSmem<kTokens>*>(smem_raw + ((1024 - (mma::smem_addr(smem_raw) & 1023)) & 1023));
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * kTokens;
  const BlockPlace bp = block_place(a, blockIdx.y);
  if (threadIdx.x == 0) {
    for (int i = 0; i < kRingStages<kTokens>; ++i) {
      bulk::barrier_init(&sm.full[i], 1);
      bulk::barrier_init(&sm.empty[i], kConsumerWarps);
    }
    bulk::barrier_init_fence();
  }
  __syncthreads();
  const int splits = static_cast<int>(gridDim.z);
  const ChunkRange range = chunk_range(a.chunks, static_cast<int>(blockIdx.z), splits);
  // Split K (clusters of gridDim.z blocks along z, block z = cluster rank z): once every block of
  // the cluster has staged its partial sums (first cluster barrier), block z writes the z-th slice
  // of the tile's tokens; no block leaves while another may read its shared memory (second). The
  // barriers sit in both branches: code after a join would be held to the producer's registers.
  if (threadIdx.x >= kConsumerThreads) {
    // Registers per thread after the split: the producer needs few, the consumers hold the
    // accumulators (kTokens / 2) and two chunks of A fragments; 128 · 40 + 256 · 232 ≤ 64 K.
    lower_registers<40>();
    if (threadIdx.x == kConsumerThreads) produce<kTokens>(a, maps, sm, m0, bp, range);
    if (splits > 1) {
      bulk::cluster_sync();
      bulk::cluster_sync();
    }
  } else {
    raise_registers<232>();
    consume<T, kSplit, kTokens>(a, sm, bp, range);
    if (splits > 1) bulk::cluster_sync();
    const int slice = (kTokens + splits - 1) / splits, begin = static_cast<int>(blockIdx.z) * slice;
    emit_outputs<T, kTokens>(a, output_tile(sm), splits, bp, m0, begin, begin + slice < kTokens ? begin + slice : kTokens);
    if (splits > 1) bulk::cluster_sync();
  }
}

}  // namespace

void set_qgemm_wgmma(bool on) { wgmma_flag().store(on, std::memory_order_relaxed); }
void set_qgemm_wgmma_plan(int tokens, int splits) {
  forced_tokens().store(tokens == 128 || tokens == 256 ? tokens : 0, std::memory_order_relaxed);
  forced_splits().store(splits > 0 ? splits : 0, std::memory_order_relaxed);
}
bool qgemm_wgmma_enabled() { return wgmma_flag().load(std::memory_order_relaxed); }
bool qgemm_wgmma_takes(int bits, bool nf4) { return qgemm_wgmma_enabled() && bits == 4 && !nf4; }

namespace {

// A 2-D tensor map (rows `row_bytes` apart) in boxes of box[1] rows × box[0] elements; rows and
// columns past the end are zero-filled. cuTensorMapEncodeTiled comes from the driver through the
// runtime's entry point query (no link against libcuda).
Result<CUtensorMap> tensor_map_2d(CUtensorMapDataType type, const void* base, uint64_t cols, uint64_t rows,
                                  uint64_t row_bytes, const cuuint32_t (&box)[2], CUtensorMapSwizzle swizzle) {
  static const PFN_cuTensorMapEncodeTiled_v12000 encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &found) !=
            cudaSuccess ||
        found != cudaDriverEntryPointSuccess)
      fn = nullptr;
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
  }();
  if (encode == nullptr) return unsupported("qgemm (wgmma): the driver has no cuTensorMapEncodeTiled");
  CUtensorMap map;
  const cuuint64_t dims[2] = {cols, rows}, strides[1] = {row_bytes};
  const cuuint32_t element_strides[2] = {1, 1};
  const CUresult r = encode(&map, type, 2, const_cast<void*>(base), dims, strides, box, element_strides,
                            CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                            CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) return error(StatusCode::kInternal, "qgemm (wgmma): cuTensorMapEncodeTiled failed ({})", static_cast<int>(r));
  return map;
}

template <typename T, int kTokens>
Result<GemmMaps> gemm_maps(const QgemvTcArgs& a) {
  GemmMaps maps{};
  const cuuint32_t x_box[2] = {kTcChunkK, kTokens}, w_box[2] = {kWTileWords, kConsumerWarps};
  Result<CUtensorMap> x = tensor_map_2d(std::is_same_v<T, __half> ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
                                        a.x, a.ldx, a.m, a.ldx * 2, x_box, CU_TENSOR_MAP_SWIZZLE_128B);
  if (!x.is_ok()) return x.status();
  maps.x = x.value();
  for (int i = 0; i < a.segments; ++i) {
    const uint64_t words = static_cast<uint64_t>(a.chunks) * kWTileWords;
    Result<CUtensorMap> w = tensor_map_2d(CU_TENSOR_MAP_DATA_TYPE_UINT32, a.seg[i].tc, words, segment_tiles(a.seg[i]),
                                          words * 4, w_box, CU_TENSOR_MAP_SWIZZLE_NONE);
    if (!w.is_ok()) return w.status();
    maps.w[i] = w.value();
  }
  return maps;
}

template <typename T, bool kSplit, int kTokens>
Status launch_wgmma(const QgemvTcArgs& a, int64_t blocks, int splits, cudaStream_t stream) {
  if (splits < 1 || splits > kGemmMaxSplits || splits > a.chunks)  // every block needs a chunk
    return invalid_argument("qgemm (wgmma): {} blocks per tile for {} chunks of K", splits, a.chunks);
  Result<GemmMaps> maps = gemm_maps<T, kTokens>(a);
  if (!maps.is_ok()) return maps.status();
  const dim3 grid(static_cast<unsigned>(ceil_div(a.m, kTokens)), static_cast<unsigned>(blocks), static_cast<unsigned>(splits));
  constexpr auto kernel = qgemm_wgmma_kernel<T, kSplit, kTokens>;
  CUDA_RETURN_IF_ERROR((allow_dynamic_smem<kernel>(kSmemBytes<kTokens>)));
  CUDA_RETURN_IF_ERROR(launch_kernel_in_clusters(kernel, grid, static_cast<unsigned>(splits), kThreads,
                                                 kSmemBytes<kTokens>, stream, a, maps.value()));
  return Status::ok();
}

// Clusters of `splits` blocks of the kTokens kernels that run at once (every instance for kTokens
// takes the same shared memory and threads, so one answers for all); 0 where clusters that large
// cannot run.
template <int kTokens>
Result<int> clusters_at_once(int splits) {
  constexpr auto kernel = qgemm_wgmma_kernel<__nv_bfloat16, false, kTokens>;
  CUDA_RETURN_IF_ERROR((allow_dynamic_smem<kernel>(kSmemBytes<kTokens>)));
  cudaLaunchAttribute cluster = cluster_z_attribute(static_cast<unsigned>(splits));
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(1, 1, static_cast<unsigned>(splits));
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = kSmemBytes<kTokens>;
  cfg.attrs = &cluster;
  cfg.numAttrs = 1;
  int clusters = 0;
  if (cudaOccupancyMaxActiveClusters(&clusters, kernel, &cfg) != cudaSuccess) {
    (void)cudaGetLastError();  // clusters of this size cannot run here: not an error of the launch
    clusters = 0;
  }
  return clusters;
}

// Blocks that run at once on the current device, [0: 128 / 1: 256 tokens][blocks per tile] (a GPC's
// SMs beyond a multiple of the cluster size stay idle).
using AtOnce = int[2][kGemmMaxSplits + 1];
Status ask_blocks_at_once(AtOnce& t) {
  ASSIGN_OR_RETURN(const int sms, current_sm_count());
  t[0][1] = t[1][1] = sms;
  for (int s = 2; s <= kGemmMaxSplits; ++s) {
    ASSIGN_OR_RETURN(const int narrow, clusters_at_once<128>(s));
    ASSIGN_OR_RETURN(const int wide, clusters_at_once<256>(s));
    t[0][s] = narrow * s;
    t[1][s] = wide * s;
  }
  return Status::ok();
}

// The table of the current device, asked of the driver once per device: a launch reads it after
// one cudaGetDevice.
Result<const AtOnce*> blocks_at_once() {
  constexpr int kMaxDevices = 64;
  static AtOnce tables[kMaxDevices];
  static std::atomic<bool> ready[kMaxDevices];
  static std::mutex filling;
  int device = 0;
  CUDA_RETURN_IF_ERROR(cudaGetDevice(&device));
  if (device >= kMaxDevices) {  // not cached: asked at every launch
    thread_local AtOnce asked;
    RETURN_IF_ERROR(ask_blocks_at_once(asked));
    return &asked;
  }
  if (ready[device].load(std::memory_order_acquire)) return &tables[device];
  std::lock_guard<std::mutex> lock(filling);
  if (!ready[device].load(std::memory_order_relaxed)) {
    RETURN_IF_ERROR(ask_blocks_at_once(tables[device]));
    ready[device].store(true, std::memory_order_release);
  }
  return &tables[device];
}

// The plan of a launch of `row_blocks` blocks of 128 output rows (qgemm_plan.h), within the limits
// set_qgemm_wgmma_plan set.
Result<GemmPlan> plan_launch(int64_t m, int64_t row_blocks, int chunks) {
  ASSIGN_OR_RETURN(const AtOnce* at_once, blocks_at_once());
  const GemmPlanLimits limits{forced_tokens().load(std::memory_order_relaxed),
                              forced_splits().load(std::memory_order_relaxed)};
  return plan_gemm(m, row_blocks, chunks, *at_once, limits);
}

template <typename T, bool kSplit>
Status launch_wgmma_sized(const QgemvTcArgs& a, cudaStream_t stream) {
  int64_t blocks = 0;
  for (int i = 0; i < a.segments; ++i) blocks += segment_blocks(a.seg[i]);
  if (blocks > 65535) return invalid_argument("qgemm (wgmma): {} output rows exceed the grid", tc_tiles(a) * kTcRows);
  ASSIGN_OR_RETURN(const GemmPlan plan, plan_launch(a.m, blocks, a.chunks));
  return plan.tokens == 128 ? launch_wgmma<T, kSplit, 128>(a, blocks, plan.splits, stream)
                            : launch_wgmma<T, kSplit, 256>(a, blocks, plan.splits, stream);
}

}  // namespace

template <typename T>
Result<bool> qgemm_wgmma_launch(const QgemvTcArgs& a, cudaStream_t stream) {
  // The gather (act-order x read through perm) is a GEMV-only path of at most 8 rows.
  if (!qgemm_wgmma_takes(a.int8 ? 8 : 4, a.nf4) || a.perm != nullptr) return false;
  // qgemv_cuda hands over x in place only when 16-byte aligned (else staged), with rows of Kp.
  if (reinterpret_cast<uintptr_t>(a.x) % 16 != 0 || a.ldx % kTcChunkK != 0 || a.m > 0x7fffffff)
    return invalid_argument("qgemm (wgmma): x must be 16-byte aligned with rows of whole 64-position chunks and "
                            "at most 2^31 - 1 rows (got ldx {}, {} rows)", a.ldx, a.m);
  const Status st = a.group_shift == 5 ? launch_wgmma_sized<T, true>(a, stream) : launch_wgmma_sized<T, false>(a, stream);
  RETURN_IF_ERROR(st);
  return true;
}

Result<int> qgemm_wgmma_blocks_at_once(int tokens, int splits) {
  if ((tokens != 128 && tokens != 256) || splits < 1 || splits > kGemmMaxSplits)
    return invalid_argument("qgemm (wgmma): no plan of {} tokens and {} blocks per tile", tokens, splits);
  ASSIGN_OR_RETURN(const AtOnce* at_once, blocks_at_once());
  return (*at_once)[tokens / 256][splits];
}

Result<GemmPlan> qgemm_wgmma_plan(int64_t m, int64_t n, int64_t k) {
  return plan_launch(m, ceil_div(n, kBlockRows), static_cast<int>(ceil_div(k, kTcChunkK)));
}

template Result<bool> qgemm_wgmma_launch<__half>(const QgemvTcArgs&, cudaStream_t);
template Result<bool> qgemm_wgmma_launch<__nv_bfloat16>(const QgemvTcArgs&, cudaStream_t);

}  // namespace compactor
