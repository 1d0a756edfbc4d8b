// Mixed-input GEMM for prefill-sized batches on Hopper tensor cores (wgmma, sm_90a): y[M, N] =
// x[M, K] · dq(W)ᵀ with W's int4 codes read from the tc layout (formats/quant_repack.h) and turned
// into wgmma A fragments in registers, so the weights cross memory once, at half a byte each,
// instead of the dequantize + cuBLAS path's 0.5 (read) + 2 (write) + 2 (read) bytes.
//
// Block: 2 warpgroups = 8 warps, 128 output rows (warp w: row tile w, the A rows of warpgroup
// w / 4) × 256 input rows (tokens: the wgmma N, m64n256k16), all of K in 64-position chunks through
// a 5-stage shared-memory ring (chunk c + 4 is copied while chunk c is multiplied):
//   x:  256 tokens × 64 positions by one TMA tensor copy (thread 0, counted on x_full), K-major
//       with the 128-byte swizzle wgmma reads (wgmma.cuh); rows past M are zero-filled.
//   w:  the 8 row tiles' 512-byte chunks by cp.async (each lane copies and later reads the 16
//       bytes of its own fragment).
//   sz: each row's scale/zero word of the chunk's group (two: group size 32), by cp.async.
// The tc layout gives lane t of a k16 step the k pairs 2t and 2t + 1 (positions 4t .. 4t+3, so
// that the GEMV's B fragment is one load; quant_repack.h); wgmma wants pairs t and t + 4 in lane
// t, with B in position order. Two shuffles per step move the code words there (pair P lives in
// lane P / 2, half P % 2 of its word), so x is copied as stored.
// Per chunk a warp converts its 4 × 4 A registers exactly as the dequantize kernel does (bf16:
// (c − z)·s in f32, rounded once to bf16; f16: one rounding of the exact product), so results
// match dequantize + cuBLAS up to the order of the f32 sums. The conversion of chunk c + 1 runs
// while the tensor cores multiply chunks c − 1 and c (A double-buffered in registers).
// Status (H100): correct, but slower than dequantize + cuBLAS at prefill (TTFT 512 tokens 21.9 vs
// 19.9 ms), so CudaBackend runs it only with QuantGemm::kFused; the measurements and what is left
// to try are in bench/results/NVIDIA-H100-80GB-HBM3-ncu-notes.md ("Sixth session").
// Test: build-*/tests/test_cuda_qgemm (on a GPU machine). Bench: build-*/bench/bench_qgemm.
#include <cuda.h>
#include <cudaTypedefs.h>

#include <atomic>

#include "backend/cuda/bulk_copy.cuh"
#include "backend/cuda/launch.cuh"
#include "backend/cuda/mma.cuh"
#include "backend/cuda/qgemm_wgmma.cuh"
#include "backend/cuda/qgemv.cuh"
#include "backend/cuda/wgmma.cuh"

namespace compactor {

using namespace qtc;  // the launch arguments and conversion helpers (qgemv_tc_chunk.cuh)

namespace {

constexpr int kWarpgroups = 2;
constexpr int kThreads = 128 * kWarpgroups;
constexpr int kWarps = kThreads / 32;         // one 16-row tile each
constexpr int kBlockRows = kWarps * kTcRows;  // 128
constexpr int kStages = 5;
constexpr int kGemmTokens = 256;
constexpr int kXRowBytes = kTcChunkK * 2;  // one token's 64 positions
static_assert(kXRowBytes == 128, "one 128-byte swizzle row per token and chunk");

// kTokens: input rows per block, the wgmma N (128 or 256).
template <int kTokens>
struct GemmSmem {
  uint8_t x[kStages][kTokens * kXRowBytes];  // first: each stage 1024-byte aligned
  uint4 w[kStages][kWarps][32];
  uint32_t sz[kStages][2][kBlockRows];  // [half of the chunk][row]
  uint64_t x_full[kStages];             // the stage's x tile landed (tensor copy bytes)
};
template <int kTokens>
constexpr size_t kSmemBytes = sizeof(GemmSmem<kTokens>) + 1024;  // + slack to align the dynamic base

std::atomic<bool>& wgmma_flag() {
  static std::atomic<bool> on{false};
  return on;
}

__device__ __forceinline__ void cp_async4(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 4 : 0) : "memory");
}
__device__ __forceinline__ void fence_proxy_async() {
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
}

// What one thread copies for every chunk, fixed at the start (x: one tensor copy, copy_x).
struct CopyPlan {
  const uint4* w;              // this warp's row tile, chunk 0, this lane's 16 bytes
  bool w_valid;
  const uint32_t* sz;          // scale/zero row of block row tid % 128, word `half` of chunk 0's group
  bool sz_active, sz_valid;
};

__device__ __forceinline__ CopyPlan copy_plan(const QgemvTcArgs& a, int64_t tile0) {
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int64_t tiles = tc_tiles(a);
  CopyPlan p;
  const int64_t wt = tile0 + warp;
  p.w_valid = wt < tiles;
  const TcSegment& ws = a.seg[p.w_valid ? tc_segment_of(a, wt) : 0];
  p.w = ws.tc + ((p.w_valid ? wt - ws.first_tile : 0) * a.chunks) * 32 + lane;

  const int half = tid / kBlockRows, row_in_block = tid % kBlockRows;
  const int64_t st = tile0 + row_in_block / kTcRows;
  p.sz_active = half == 0 || a.group_shift == 5;
  const int si = st < tiles ? tc_segment_of(a, st) : 0;
  const int64_t srow = st < tiles ? (st - a.seg[si].first_tile) * kTcRows + row_in_block % kTcRows : 0;
  p.sz_valid = st < tiles && srow < a.seg[si].n;
  p.sz = a.seg[si].scale_zero + (p.sz_valid ? srow : 0) * a.groups_padded + half;
  return p;
}

// Weights of chunk c (constant inputs: may be copied before the previous kernel finishes).
template <int kTokens>
__device__ __forceinline__ void copy_weights(const QgemvTcArgs& a, const CopyPlan& p, GemmSmem<kTokens>& sm,
                                             int c, int s) {
  const int tid = threadIdx.x;
  mma::cp_async16(&sm.w[s][tid / 32][tid % 32], p.w + static_cast<int64_t>(c) * 32, p.w_valid);
  if (p.sz_active)
    cp_async4(mma::smem_addr(&sm.sz[s][tid / kBlockRows][tid % kBlockRows]), p.sz + ((c * kTcChunkK) >> a.group_shift),
              p.sz_valid);
}

// x of chunk c into stage s: one tensor copy of the block's [kTokens, 64] tile (thread 0; rows
// past M zero-filled by the copy), completing on x_full[s].
template <int kTokens>
__device__ __forceinline__ void copy_x(const CUtensorMap& x_map, GemmSmem<kTokens>& sm, int64_t m0, int c, int s) {
  if (threadIdx.x != 0) return;
  bulk::arrive_expect_bytes(&sm.x_full[s], kTokens * kXRowBytes);
  bulk::copy_tensor_2d(sm.x[s], &x_map, c * kTcChunkK, static_cast<int>(m0), &sm.x_full[s]);
}

// One scale/zero word, ready for the conversion.
struct Dq {
  uint32_t zero;     // f16: (1024 + z) pair
  uint32_t scale2;   // f16: (scale, scale) pair
  float scale;       // bf16: f32 scale
  float neg_zero;    // bf16: −(128 + z)·scale, exact in f32 (8 × 11 significant bits)
};
template <typename T>
__device__ __forceinline__ Dq dq_of(uint32_t sz) {
  const float s = sz_scale(sz);
  const float z = static_cast<float>(__half2int_rn(__ushort_as_half(static_cast<unsigned short>(sz >> 16))));
  return Dq{zero_pair<T>(sz), (sz & 0xffffu) * 0x00010001u, s, -(128.f + z) * s};
}

// (a & 0x000F0000) | magic as one LOP3 (see nibbles_or).
__device__ __forceinline__ uint32_t nibble_or(uint32_t a, uint32_t magic) {
  uint32_t d;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(d) : "r"(a), "n"(0x000F0000), "r"(magic));
  return d;
}

// The A register of the code pair at bits 0-3 (lower k) and 16-19 of v: (c − z)·s for both.
template <typename T>
__device__ __forceinline__ uint32_t dq_pair(uint32_t v, const Dq& q);
template <>
__device__ __forceinline__ uint32_t dq_pair<__nv_bfloat16>(uint32_t v, const Dq& q) {
  // 128 + c as f32 (0x43000000 = 128, its mantissa's last place 2^-16: c lands at bits 16-19);
  // (128 + c)·s − (128 + z)·s in one fma is (c − z)·s rounded once, and that is exact in f32.
  const float lo = __uint_as_float(nibble_or(v << 16, 0x43000000u));
  const float hi = __uint_as_float(nibble_or(v, 0x43000000u));
  return mma::pack2<__nv_bfloat16>(fmaf(lo, q.scale, q.neg_zero), fmaf(hi, q.scale, q.neg_zero));
}
template <>
__device__ __forceinline__ uint32_t dq_pair<__half>(uint32_t v, const Dq& q) {
  const uint32_t d = sub2<__half>(nibbles_or(v, tc_magic<__half>()), q.zero);  // exact c − z
  const __half2 r = __hmul2(*reinterpret_cast<const __half2*>(&d), *reinterpret_cast<const __half2*>(&q.scale2));
  return *reinterpret_cast<const uint32_t*>(&r);
}

// This warp's A fragments of the chunk in stage s: a[step][register] (see the file comment).
template <typename T, bool kSplit, int kTokens>
__device__ __forceinline__ void convert_chunk(const GemmSmem<kTokens>& sm, int s, uint32_t (&a)[4][4]) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const uint4 w = sm.w[s][warp][lane];
  const uint32_t words[4] = {w.x, w.y, w.z, w.w};
  const int src_lo = 4 * g + t / 2, src_hi = src_lo + 2;  // lanes holding k pairs t and t + 4
  const int shift = 8 * (t & 1);                          // second half of their words for odd t
  const int row = warp * kTcRows + g;
  Dq lo = dq_of<T>(sm.sz[s][0][row]), hi = dq_of<T>(sm.sz[s][0][row + 8]);
#pragma unroll
  for (int st = 0; st < 4; ++st) {
    if (kSplit && st == 2) {  // group size 32: the second half of the chunk has its own group
      lo = dq_of<T>(sm.sz[s][1][row]);
      hi = dq_of<T>(sm.sz[s][1][row + 8]);
    }
    const uint32_t wa = __shfl_sync(0xffffffffu, words[st], src_lo) >> shift;
    const uint32_t wb = __shfl_sync(0xffffffffu, words[st], src_hi) >> shift;
    a[st][0] = dq_pair<T>(wa, lo);       // row g,   k 2t, 2t+1
    a[st][1] = dq_pair<T>(wa >> 4, hi);  // row g+8, k 2t, 2t+1
    a[st][2] = dq_pair<T>(wb, lo);       // row g,   k 2t+8, 2t+9
    a[st][3] = dq_pair<T>(wb >> 4, hi);  // row g+8, k 2t+8, 2t+9
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

// Output rows of this warp's tile, tokens of this block: acc element 4i + e is (row g + 8 (e >> 1),
// token 8i + 2t + (e & 1)) (wgmma.cuh).
template <typename T, int kTokens>
__device__ __forceinline__ void store_tile(const QgemvTcArgs& a, int64_t tile0, int64_t m0,
                                           const float (&acc)[kTokens / 2]) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int64_t tile = tile0 + warp;
  if (tile >= tc_tiles(a)) return;
  const TcSegment& sg = a.seg[tc_segment_of(a, tile)];
  const int64_t row0 = (tile - sg.first_tile) * kTcRows + g;
  T* out = static_cast<T*>(sg.out);
#pragma unroll
  for (int e2 = 0; e2 < 2; ++e2) {
    const int64_t row = row0 + 8 * e2;
    if (row >= sg.n) continue;
    const float bias = sg.bias != nullptr ? load_any(sg.bias, a.bias_dtype, row) : 0.f;
#pragma unroll
    for (int i = 0; i < kTokens / 8; ++i)
#pragma unroll
      for (int e1 = 0; e1 < 2; ++e1) {
        const int64_t m = m0 + 8 * i + 2 * t + e1;
        if (m >= a.m) continue;
        T* o = out + m * sg.n + row;
        *o = from_f32<T>(acc[4 * i + 2 * e2 + e1] + bias + (a.accumulate ? to_f32(*o) : 0.f));
      }
  }
}

// Chunk c: issue its multiply (A in a_mul, x in stage s), which queues behind chunk c − 1's on
// the tensor cores; wait until chunk c − 1's is done (one group stays in flight, so the tensor
// cores never drain between chunks) and chunk c + 1 has landed; then refill chunk c − 1's stage
// with chunk c − 1 + kStages and convert chunk c + 1 into a_conv (chunk c − 1's A, free now).
template <typename T, bool kSplit, int kTokens>
__device__ __forceinline__ void step(const QgemvTcArgs& a, const CUtensorMap& x_map, const CopyPlan& p,
                                     GemmSmem<kTokens>& sm, int64_t m0, int c, int& s, uint32_t (&a_mul)[4][4],
                                     uint32_t (&a_conv)[4][4], float (&acc)[kTokens / 2]) {
  bulk::wait(&sm.x_full[s], static_cast<uint32_t>(c / kStages) & 1u);  // x of chunk c landed
  multiply_chunk<T, kTokens>(sm, s, a_mul, acc);
  wgmma::wait<1>();
  wgmma::pin(acc);
  pin(a_conv);  // read by chunk c − 1's wgmma until here
  // cp.async groups (weights): chunks 0 .. kStages − 1 (prologue), then chunk k >= kStages in
  // group k + 1 (step k − kStages + 1 commits it; step 0 an empty group): at most kStages − 3
  // pending leaves chunk c + 1 landed.
  mma::cp_async_wait<kStages - 3>();
  fence_proxy_async();
  __syncthreads();
  const int s_prev = s == 0 ? kStages - 1 : s - 1, s_next = s + 1 == kStages ? 0 : s + 1;
  if (c >= 1 && c - 1 + kStages < a.chunks) {
    copy_weights(a, p, sm, c - 1 + kStages, s_prev);
    copy_x(x_map, sm, m0, c - 1 + kStages, s_prev);
  }
  mma::cp_async_commit();
  if (c + 1 < a.chunks) convert_chunk<T, kSplit, kTokens>(sm, s_next, a_conv);
  s = s_next;
}

template <typename T, bool kSplit, int kTokens>
__global__ void __launch_bounds__(kThreads, 1) qgemm_wgmma_kernel(const QgemvTcArgs a, const __grid_constant__ CUtensorMap x_map) {
  // The ring needs 1024-byte alignment (the swizzle pattern repeats every 8 rows of 128 bytes);
  // offsetting from the __shared__ symbol keeps the accesses in the shared window (LDS, not LD).
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  auto& sm = *reinterpret_cast<GemmSmem<kTokens>*>(smem_raw + ((1024 - (mma::smem_addr(smem_raw) & 1023)) & 1023));
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * kTokens;
  const int64_t tile0 = static_cast<int64_t>(blockIdx.y) * kWarps;
  const int chunks = a.chunks;
  const CopyPlan p = copy_plan(a, tile0);

  if (threadIdx.x == 0) {
    for (int i = 0; i < kStages; ++i) bulk::barrier_init(&sm.x_full[i], 1);
    bulk::barrier_init_fence();
  }
  __syncthreads();
  // Prologue: the weights of the first kStages chunks before the wait for the previous kernel
  // (launch.cuh), then x; one commit group per chunk (the first also holds every early weight).
  for (int c = 0; c < kStages; ++c) {
    if (c < chunks) copy_weights(a, p, sm, c, c);
    mma::cp_async_commit();
  }
  wait_for_prior_grids();
  for (int c = 0; c < kStages && c < chunks; ++c) copy_x(x_map, sm, m0, c, c);
  mma::cp_async_wait<kStages - 1>();  // chunk 0
  fence_proxy_async();
  __syncthreads();

  float acc[kTokens / 2];
#pragma unroll
  for (int i = 0; i < kTokens / 2; ++i) acc[i] = 0.f;
  uint32_t a0[4][4], a1[4][4] = {};  // A of even and odd chunks: unrolled by two, no register copies
  convert_chunk<T, kSplit, kTokens>(sm, 0, a0);
  int s = 0;
  for (int c = 0; c < chunks; c += 2) {
    step<T, kSplit, kTokens>(a, x_map, p, sm, m0, c, s, a0, a1, acc);
    if (c + 1 < chunks) step<T, kSplit, kTokens>(a, x_map, p, sm, m0, c + 1, s, a1, a0, acc);
  }
  wgmma::wait<0>();
  wgmma::pin(acc);
  store_tile<T, kTokens>(a, tile0, m0, acc);
}

}  // namespace

void set_qgemm_wgmma(bool on) { wgmma_flag().store(on, std::memory_order_relaxed); }
bool qgemm_wgmma_enabled() { return wgmma_flag().load(std::memory_order_relaxed); }
bool qgemm_wgmma_takes(int bits, bool nf4) { return qgemm_wgmma_enabled() && bits == 4 && !nf4; }

// The tensor map of x ([M, ldx] 16-bit, rows ldx · 2 bytes apart) in boxes of [kTokens, 64] with
// the 128-byte swizzle; cuTensorMapEncodeTiled comes from the driver through the runtime's entry
// point query (no link against libcuda).
template <typename T, int kTokens>
Result<CUtensorMap> x_tensor_map(const QgemvTcArgs& a) {
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
  const cuuint64_t dims[2] = {static_cast<cuuint64_t>(a.ldx), static_cast<cuuint64_t>(a.m)};
  const cuuint64_t strides[1] = {static_cast<cuuint64_t>(a.ldx) * 2};
  const cuuint32_t box[2] = {kTcChunkK, kTokens}, element_strides[2] = {1, 1};
  const CUresult r = encode(&map, std::is_same_v<T, __half> ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
                            2, const_cast<void*>(a.x), dims, strides, box, element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
                            CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                            CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) return error(StatusCode::kInternal, "qgemm (wgmma): cuTensorMapEncodeTiled failed ({})", static_cast<int>(r));
  return map;
}

template <typename T, bool kSplit, int kTokens>
Status launch_wgmma(const QgemvTcArgs& a, cudaStream_t stream) {
  const int64_t feature_blocks = ceil_div(tc_tiles(a), kWarps), token_blocks = ceil_div(a.m, kTokens);
  if (feature_blocks > 65535)
    return invalid_argument("qgemm (wgmma): {} output rows exceed the grid", tc_tiles(a) * kTcRows);
  const dim3 grid(static_cast<unsigned>(token_blocks), static_cast<unsigned>(feature_blocks));
  Result<CUtensorMap> map = x_tensor_map<T, kTokens>(a);
  if (!map.is_ok()) return map.status();
  const CUtensorMap x_map = map.value();
  constexpr auto kernel = qgemm_wgmma_kernel<T, kSplit, kTokens>;
  CUDA_RETURN_IF_ERROR((allow_dynamic_smem<kernel>(kSmemBytes<kTokens>)));
  CUDA_RETURN_IF_ERROR(launch_kernel(kernel, grid, kThreads, kSmemBytes<kTokens>, stream, a, x_map));
  return Status::ok();
}

template <typename T>
Result<bool> qgemm_wgmma_launch(const QgemvTcArgs& a, cudaStream_t stream) {
  // The gather (act-order x read through perm) is a GEMV-only path of at most 8 rows.
  if (!qgemm_wgmma_takes(a.int8 ? 8 : 4, a.nf4) || a.perm != nullptr) return false;
  // qgemv_cuda hands over x in place only when 16-byte aligned (else staged), with rows of Kp.
  if (reinterpret_cast<uintptr_t>(a.x) % 16 != 0 || a.ldx % kTcChunkK != 0 || a.m > 0x7fffffff)
    return invalid_argument("qgemm (wgmma): x must be 16-byte aligned with rows of whole 64-position chunks and "
                            "at most 2^31 - 1 rows (got ldx {}, {} rows)", a.ldx, a.m);
  const Status st = a.group_shift == 5 ? launch_wgmma<T, true, kGemmTokens>(a, stream)
                                       : launch_wgmma<T, false, kGemmTokens>(a, stream);
  RETURN_IF_ERROR(st);
  return true;
}

template Result<bool> qgemm_wgmma_launch<__half>(const QgemvTcArgs&, cudaStream_t);
template Result<bool> qgemm_wgmma_launch<__nv_bfloat16>(const QgemvTcArgs&, cudaStream_t);

}  // namespace compactor
