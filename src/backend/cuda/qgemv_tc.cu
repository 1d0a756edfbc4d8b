// Tensor-core variant of the fused int4 GEMV/skinny GEMM (qgemv.cuh, QgemvKernel::kTensorCores):
// y[M, N] = x[M, K] · dq(W)ᵀ with mma.m16n8k16, W as the A operand (16 output rows × 16 positions)
// and xᵀ as B (16 positions × 8 input rows), f32 accumulators. The codes come in the tc layout of
// formats/quant_repack.h, where one coalesced 16-byte load per lane holds its A fragments for four
// k16 steps; a fragment register is made by one AND-OR against the bits of 1024 (f16) / 128 (bf16)
// and one packed subtraction of (1024 + zero), exact, so the tensor cores multiply c - z by x in
// f32 and the scale is applied once per group to the f32 partial products.
// A block owns 16 output rows and up to 64 input rows (kTiles n8 tiles); its 8 warps split K by
// 64-position chunks (kTcUnroll per lane per batch, streamed through a kTcStages-deep cp.async
// ring in shared memory) and reduce through shared memory.
// The grid is persistent (one resident set of blocks, each looping over row tiles) and the last
// batch of a row tile prefetches the first of the next, so loads stay in flight across row tiles.
// Act-order with up to 8 input rows (kGather): x is read through the permutation here (two
// indices and two 16-bit loads per fragment register) instead of a staging launch per matmul.
// Test: build-*/tests/test_cuda_qgemm (on a GPU machine). Bench: build-*/bench/bench_qgemm.
#include <atomic>

#include "backend/cuda/device_utils.cuh"
#include "backend/cuda/mma.cuh"
#include "backend/cuda/qgemv_tc.cuh"

namespace compactor {

namespace {

constexpr int kTcWarps = 8;
constexpr int kTcUnroll = 4;    // 64-position chunks per lane per batch
// Batches of codes in the shared-memory ring (cp.async): kTcStages - 1 batches in flight per warp
// while one is multiplied. 4 stages = 64 KB per block: with 2 blocks/SM up to 96 KB of codes in
// flight per SM (Little's law wants ~23 KB at 3 TB/s × 1 us; the register double buffer it
// replaces held 32 KB, a single batch ahead).
constexpr int kTcStages = 4;
constexpr int kTcRingBytes = kTcStages * kTcWarps * kTcUnroll * 32 * 16;
// Blocks per SM the register budget is set for (__launch_bounds__); no instance spills at these
// limits (ptxas -v: 96/107/127/203 registers for 1/2/4/8 n8 tiles; 3 blocks at one tile would
// need 80 and spill).
template <int kTiles> inline constexpr int kTcMinBlocks = kTiles <= 4 ? 2 : 1;
constexpr int kTcMaxRowsM = 64;  // input rows per block (8 n8 tiles)

struct QgemvTcArgs {
  const uint4* tc;             // [N/16][Kp/64][32][4] u32 (tc layout)
  const uint32_t* scale_zero;  // [N, Gp]
  const void* x;               // [M, ldx] act (kGather: x itself, ldx = K)
  const int32_t* perm;         // kGather: [Kp] column of each position (-1: padding)
  void* out;                   // [M, N] act
  const void* bias;            // [N] or nullptr
  DType bias_dtype;
  int64_t n, m, ldx, groups_padded;
  int chunks;       // Kp / 64
  int group_shift;  // position p is in group p >> group_shift
  bool accumulate;
};

template <typename T> __device__ __forceinline__ uint32_t tc_magic();
template <> __device__ __forceinline__ uint32_t tc_magic<__half>() { return 0x64006400u; }         // 1024, 1024
template <> __device__ __forceinline__ uint32_t tc_magic<__nv_bfloat16>() { return 0x43004300u; }  // 128, 128
template <typename T> __device__ __forceinline__ float tc_magic_value();
template <> __device__ __forceinline__ float tc_magic_value<__half>() { return 1024.f; }
template <> __device__ __forceinline__ float tc_magic_value<__nv_bfloat16>() { return 128.f; }

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
__device__ __forceinline__ float sz_zero(uint32_t sz) { return __half2float(__ushort_as_half(static_cast<unsigned short>(sz >> 16))); }

// x at positions p and p + 1 of one input row as a B fragment register (position p in the low
// half); xrow: [K] (kGather, read through perm) or [Kp] 16-bit values.
template <bool kGather>
__device__ __forceinline__ uint32_t x_pair(const unsigned short* xrow, const int32_t* perm, int64_t p) {
  if (!kGather) return __ldg(reinterpret_cast<const unsigned int*>(xrow + p));
  const int2 col = __ldg(reinterpret_cast<const int2*>(perm + p));
  const uint32_t lo = col.x >= 0 ? __ldg(xrow + col.x) : 0u;
  const uint32_t hi = col.y >= 0 ? __ldg(xrow + col.y) : 0u;
  return lo | (hi << 16);
}

// One 64-position chunk: four k16 steps of mma per n8 tile; sz = scale/zero words of rows g, g+8
// for the chunk's first and second half (the same group unless the group size is 32). xr[j]: the
// x row of tile j; positions 2t (+ 8) of each step are read.
template <typename T, int kTiles, bool kGather>
__device__ __forceinline__ void tc_chunk(const uint4& w, const uint32_t (&sz)[4],
                                         const unsigned short* const (&xr)[kTiles],
                                         const int32_t* perm, int t, int64_t k0, bool split, float (&acc)[kTiles][4]) {
  const uint32_t words[4] = {w.x, w.y, w.z, w.w};
  float d[kTiles][4] = {};
  uint32_t sz_lo = 0, sz_hi = 0, z_lo = 0, z_hi = 0;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    if (h == 0 || split) {  // groups >= 64: the second half has the first's group (same words)
      sz_lo = sz[2 * h];
      sz_hi = sz[2 * h + 1];
      z_lo = mma::pack2<T>(tc_magic_value<T>() + sz_zero(sz_lo), tc_magic_value<T>() + sz_zero(sz_lo));
      z_hi = mma::pack2<T>(tc_magic_value<T>() + sz_zero(sz_hi), tc_magic_value<T>() + sz_zero(sz_hi));
    }
#pragma unroll
    for (int s2 = 0; s2 < 2; ++s2) {
      const int s = 2 * h + s2;
      const uint32_t word = words[s];
      uint32_t a[4];
      a[0] = sub2<T>((word & 0x000F000Fu) | tc_magic<T>(), z_lo);          // row g,   positions 2t, 2t+1
      a[1] = sub2<T>(((word >> 4) & 0x000F000Fu) | tc_magic<T>(), z_hi);   // row g+8, positions 2t, 2t+1
      a[2] = sub2<T>(((word >> 8) & 0x000F000Fu) | tc_magic<T>(), z_lo);   // row g,   positions 2t+8, 2t+9
      a[3] = sub2<T>(((word >> 12) & 0x000F000Fu) | tc_magic<T>(), z_hi);  // row g+8, positions 2t+8, 2t+9
      const int64_t k = k0 + 16 * s + 2 * t;
#pragma unroll
      for (int j = 0; j < kTiles; ++j) {
        const uint32_t b0 = x_pair<kGather>(xr[j], perm, k);
        const uint32_t b1 = x_pair<kGather>(xr[j], perm, k + 8);
        mma::mma16816<T>(d[j], a, b0, b1);
      }
    }
    if (h == 1 || split) {
      const float s_lo = sz_scale(sz_lo), s_hi = sz_scale(sz_hi);
#pragma unroll
      for (int j = 0; j < kTiles; ++j) {
        acc[j][0] = fmaf(s_lo, d[j][0], acc[j][0]);
        acc[j][1] = fmaf(s_lo, d[j][1], acc[j][1]);
        acc[j][2] = fmaf(s_hi, d[j][2], acc[j][2]);
        acc[j][3] = fmaf(s_hi, d[j][3], acc[j][3]);
#pragma unroll
        for (int e = 0; e < 4; ++e) d[j][e] = 0.f;
      }
    }
  }
}

}  // namespace

namespace {

// Where one job's weights live: a 16-row tile's codes (this lane's column of it) and the
// scale/zero rows of rows g and g + 8.
struct TcRows {
  const uint4* wt;
  const uint32_t* sz_lo;
  const uint32_t* sz_hi;
};

__device__ __forceinline__ TcRows tc_rows(const QgemvTcArgs& a, int64_t row_tile, int lane) {
  const int64_t row_lo = row_tile * kTcRows + (lane >> 2), row_hi = row_lo + 8;
  TcRows rs;
  rs.wt = a.tc + row_tile * a.chunks * 32 + lane;
  rs.sz_lo = a.scale_zero + (row_lo < a.n ? row_lo : a.n - 1) * a.groups_padded;
  rs.sz_hi = a.scale_zero + (row_hi < a.n ? row_hi : a.n - 1) * a.groups_padded;
  return rs;
}

// Scale/zero words of chunks base + u·kTcWarps (u < kTcUnroll) of one row tile.
__device__ __forceinline__ void tc_load_sz(const QgemvTcArgs& a, const TcRows& rs, uint32_t (&szv)[kTcUnroll][4],
                                           int base) {
#pragma unroll
  for (int u = 0; u < kTcUnroll; ++u) {
    const int c = base + u * kTcWarps;
    const bool ok = c < a.chunks;
    const int64_t g0 = (static_cast<int64_t>(c) * kTcChunkK) >> a.group_shift;
    const int64_t g1 = (static_cast<int64_t>(c) * kTcChunkK + 32) >> a.group_shift;
    szv[u][0] = ok ? __ldg(rs.sz_lo + g0) : 0u;
    szv[u][1] = ok ? __ldg(rs.sz_hi + g0) : 0u;
    szv[u][2] = ok ? __ldg(rs.sz_lo + g1) : 0u;
    szv[u][3] = ok ? __ldg(rs.sz_hi + g1) : 0u;
  }
}

}  // namespace

// Persistent: block b runs jobs b, b + gridDim.x, .. (job = row tile · m_blocks + block of 64
// input rows); the last batch of a job prefetches the first batch of the block's next job, so the
// warps keep loads in flight across row tiles instead of stalling a full memory latency at the
// start of each (at K = 4096 a row tile is only two batches per warp).
template <typename T, int kTiles, bool kGather>
__global__ void __launch_bounds__(kTcWarps * 32, kTcMinBlocks<kTiles>) qgemv_tc_kernel(const QgemvTcArgs a) {
  __shared__ float partial[kTcWarps][kTiles][4][32];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  // Jobs fit an int (the launcher checks).
  const int m_blocks = static_cast<int>((a.m + kTcMaxRowsM - 1) / kTcMaxRowsM);
  const int jobs = static_cast<int>((a.n + kTcRows - 1) / kTcRows * m_blocks);
  int job = static_cast<int>(blockIdx.x);
  if (job >= jobs) return;  // the whole block: no barrier is skipped by part of it
  const bool split = a.group_shift == 5;
  constexpr int kBatch = kTcWarps * kTcUnroll;  // chunks per batch of the block
  TcRows rows = tc_rows(a, job / m_blocks, lane);
  // Codes: a ring of kTcStages batches per warp, each lane copying (and later reading) only its own
  // 16-byte slots, so no barrier is needed; the load cursor (job_l, base_l) runs kTcStages - 1
  // batches ahead of the multiply, across row tiles. Every issue commits a group (empty past the
  // last batch) so that wait_group<kTcStages - 1> always means "the oldest batch has landed".
  extern __shared__ uint4 ring[];  // [kTcStages][kTcWarps][kTcUnroll][32]
  int job_l = job, base_l = 0;
  const uint4* wt_l = rows.wt;
  auto issue = [&](int stage) {
    if (job_l < jobs) {
#pragma unroll
      for (int u = 0; u < kTcUnroll; ++u) {
        const int c = base_l + warp + u * kTcWarps;
        const bool ok = c < a.chunks;
        mma::cp_async16(ring + ((stage * kTcWarps + warp) * kTcUnroll + u) * 32 + lane,
                        ok ? wt_l + static_cast<int64_t>(c) * 32 : a.tc, ok);
      }
      base_l += kBatch;
      if (base_l >= a.chunks) {
        base_l = 0;
        job_l += static_cast<int>(gridDim.x);
        if (job_l < jobs) wt_l = tc_rows(a, job_l / m_blocks, lane).wt;
      }
    }
    mma::cp_async_commit();
  };
#pragma unroll
  for (int st = 0; st < kTcStages - 1; ++st) issue(st);
  int stage = 0;  // ring stage of the batch multiplied next
  // Scale/zero words: a register double buffer, one batch ahead (they are L2-resident).
  uint32_t cur_sz[kTcUnroll][4], nxt_sz[kTcUnroll][4];
  tc_load_sz(a, rows, cur_sz, warp);
  T* out = static_cast<T*>(a.out);
  while (true) {
    const int64_t row_tile = job / m_blocks;
    const int64_t m0 = static_cast<int64_t>(job % m_blocks) * kTcMaxRowsM;
    const unsigned short* xr[kTiles];
#pragma unroll
    for (int j = 0; j < kTiles; ++j) {
      const int64_t xm = m0 + 8 * j + g;
      // Input rows past M read row 0: their D columns are never stored, and a column of the mma
      // does not mix into the others, so no predicate (and no branch) is needed on the x loads.
      xr[j] = static_cast<const unsigned short*>(a.x) + (xm < a.m ? xm : 0) * a.ldx;
    }
    const int next_job = job + static_cast<int>(gridDim.x);
    const bool has_next = next_job < jobs;
    float acc[kTiles][4] = {};
    for (int base0 = 0; base0 < a.chunks; base0 += kBatch) {  // the same trip count in every warp
      issue((stage + kTcStages - 1) % kTcStages);  // the slot multiplied in the previous iteration
      const bool in_job = base0 + kBatch < a.chunks;
      if (in_job || has_next) {
        // One load site; the next job's pointers are made here, not kept live through the loop.
        const TcRows src = in_job ? rows : tc_rows(a, next_job / m_blocks, lane);
        tc_load_sz(a, src, nxt_sz, (in_job ? base0 + kBatch : 0) + warp);
      }
      mma::cp_async_wait<kTcStages - 1>();  // this lane's copies of batch `stage` have landed
      const uint4* slots = ring + (stage * kTcWarps + warp) * kTcUnroll * 32 + lane;
#pragma unroll
      for (int u = 0; u < kTcUnroll; ++u) {
        const int c = base0 + warp + u * kTcWarps;
        if (c >= a.chunks) break;
        tc_chunk<T, kTiles, kGather>(slots[u * 32], cur_sz[u], xr, a.perm, t, static_cast<int64_t>(c) * kTcChunkK,
                                     split, acc);
      }
#pragma unroll
      for (int u = 0; u < kTcUnroll; ++u)
#pragma unroll
        for (int e = 0; e < 4; ++e) cur_sz[u][e] = nxt_sz[u][e];
      stage = (stage + 1) % kTcStages;
    }
#pragma unroll
    for (int j = 0; j < kTiles; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) partial[warp][j][e][lane] = acc[j][e];
    __syncthreads();
    // D fragment element e of lane (g, t) in tile j: row g + 8 (e >> 1), input row 8j + 2t + (e & 1).
    for (int idx = threadIdx.x; idx < kTiles * 4 * 32; idx += blockDim.x) {
      const int j = idx / 128, e = (idx / 32) % 4, ln = idx % 32;
      float v = 0.f;
#pragma unroll
      for (int w = 0; w < kTcWarps; ++w) v += partial[w][j][e][ln];
      const int64_t row = row_tile * kTcRows + (ln >> 2) + 8 * (e >> 1);
      const int64_t m = m0 + 8 * j + 2 * (ln & 3) + (e & 1);
      if (row >= a.n || m >= a.m) continue;
      T* o = out + m * a.n + row;
      *o = from_f32<T>(v + (a.bias != nullptr ? load_any(a.bias, a.bias_dtype, row) : 0.f) +
                       (a.accumulate ? to_f32(*o) : 0.f));
    }
    if (!has_next) break;
    __syncthreads();  // partial is rewritten by the next job
    job = next_job;
    rows = tc_rows(a, job / m_blocks, lane);
  }
}

namespace {

// One resident set of blocks (occupancy of this instance × SMs), trimmed so that every block runs
// the same number of jobs.
template <typename T, int kTiles, bool kGather = false>
Status launch_tc(const QgemvTcArgs& a, cudaStream_t stream) {
  // The ring's dynamic shared memory (> 48 KB) needs an opt-in per device; then the occupancy
  // (once per instance: the same on every device of one machine).
  int device = 0, sms = 0;
  CUDA_RETURN_IF_ERROR(cudaGetDevice(&device));
  static std::atomic<uint64_t> configured{0};  // bit d: device d done
  const uint64_t bit = device < 64 ? uint64_t{1} << device : 0;
  if (bit == 0 || (configured.load(std::memory_order_acquire) & bit) == 0) {
    CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(qgemv_tc_kernel<T, kTiles, kGather>,
                                              cudaFuncAttributeMaxDynamicSharedMemorySize, kTcRingBytes));
    configured.fetch_or(bit, std::memory_order_acq_rel);
  }
  static const int per_sm = [] {
    int b = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&b, qgemv_tc_kernel<T, kTiles, kGather>, kTcWarps * 32,
                                                      kTcRingBytes) != cudaSuccess) {
      (void)cudaGetLastError();
      return 1;
    }
    return b > 0 ? b : 1;
  }();
  CUDA_RETURN_IF_ERROR(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  const int64_t jobs = ceil_div(a.n, kTcRows) * ceil_div(a.m, kTcMaxRowsM);
  const int64_t slots = static_cast<int64_t>(per_sm) * (sms > 0 ? sms : 1);
  const int64_t blocks = ceil_div(jobs, ceil_div(jobs, slots));
  if (jobs > 0x3fffffff) return invalid_argument("qgemv (tensor cores): {} row tiles x input blocks is too many", jobs);
  qgemv_tc_kernel<T, kTiles, kGather><<<static_cast<unsigned>(blocks), kTcWarps * 32, kTcRingBytes, stream>>>(a);
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::ok();
}

}  // namespace

template <typename T>
Status qgemv_tc_launch(View out, const void* x, int64_t ldx, int64_t m, const QgemvWeight& w, bool gather, View bias,
                       bool accumulate, cudaStream_t stream) {
  const RepackPlan& plan = w.plan;
  QgemvTcArgs a{};
  a.tc = reinterpret_cast<const uint4*>(w.tc);
  a.scale_zero = w.scale_zero;
  a.x = x;
  a.perm = gather ? w.perm : nullptr;
  a.out = out.data;
  a.bias = bias.data;
  a.bias_dtype = bias.dtype;
  a.n = plan.n;
  a.m = m;
  a.ldx = ldx;
  a.groups_padded = plan.groups_padded;
  a.chunks = static_cast<int>(tc_chunks(plan));
  a.group_shift = plan.group_shift;
  a.accumulate = accumulate;
  if (gather) {
    if (m > kQgemvTcGatherMaxRows || w.perm == nullptr)
      return invalid_argument("qgemv (tensor cores): gathering x needs a permutation and at most {} rows", kQgemvTcGatherMaxRows);
    return launch_tc<T, 1, true>(a, stream);
  }
  if (m <= 8) return launch_tc<T, 1>(a, stream);
  if (m <= 16) return launch_tc<T, 2>(a, stream);
  if (m <= 32) return launch_tc<T, 4>(a, stream);
  return launch_tc<T, 8>(a, stream);
}

template Status qgemv_tc_launch<__half>(View, const void*, int64_t, int64_t, const QgemvWeight&, bool, View, bool,
                                        cudaStream_t);
template Status qgemv_tc_launch<__nv_bfloat16>(View, const void*, int64_t, int64_t, const QgemvWeight&, bool, View,
                                               bool, cudaStream_t);

}  // namespace compactor
