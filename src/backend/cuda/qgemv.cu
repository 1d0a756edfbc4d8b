// The fused intN GEMV/skinny GEMM (qgemv.cuh): a warp works on kRowsPerWarp output rows at a time;
// its lanes stride along K over "tiles" (one to three 16-byte loads of repacked codes, a whole
// number of 32-code blocks), with the next batch of tiles (and their scale/zero words) in flight
// while the current one is multiplied, as in matmul.cu's dense GEMV. At M = 1 the grid is
// persistent (about one resident set of warps) and a warp's last batch of one row pair prefetches
// the first of its next, so every warp keeps a batch in flight from start to end (Little's law:
// ~3 TB/s × ~1 us latency ≈ 23 KB per SM; 16 warps × 4 KB per batch). At M = 1 (Kp·2 bytes <= 48 KB)
// the block stages x in shared memory after issuing its first weight batch: lane l reads the x of
// its own block, 64 bytes at 64·l, so a 16-byte x load straight from global memory touches 32
// sectors for 16 useful ones (ncu: 39% of the kernel's sectors excessive); the staged copy is
// swizzled (x_slot) so those reads are conflict-free. Larger M read x through the L1 cache. The M
// input rows are tiled by kRowsM = 1/2/4/8 (template) and chunks of 8 rows go to neighbouring
// blocks, which then share the weights through L2.
//
// Dequantization without shifts or int-to-float conversions: a B-bit code c at bit offset B*p
// (B*p + B <= 23) of word v becomes a float by one AND-OR, f = bits(v & (mask << B*p) | 2^23's
// bits) = 2^23 + c·2^(B*p), and one FMA, f·2^(-B*p) + a_p = c - z, exact (both terms are exact and
// the result is a small integer) with a_p = -(2^(23-B*p) + z) computed once per (row, block).
// Codes higher in the word are shifted down once per word. Per block of 32 codes the warp forms
// d = Σ (c - z)·x in f32 and accumulates acc += s·d, so the scale is applied once per block.
// Test: build-*/tests/test_cuda_qgemm (on a GPU machine). Bench: build-*/bench/bench_qgemm.
#include <algorithm>
#include <atomic>

#include "backend/cuda/device_utils.cuh"
#include "backend/cuda/launch.cuh"
#include "backend/cuda/nf4_levels.cuh"
#include "backend/cuda/qgemv.cuh"
#include "backend/cuda/qgemv_tc.cuh"

namespace compactor {

namespace {

constexpr int kQgemvWarps = 4;
constexpr int kRowsPerWarp = 2;
constexpr int kMaxRowsM = 8;  // input rows per block (the largest M tile)

// Per bit width: 32-code blocks per tile, 16-byte loads per tile, tiles per lane in flight, and
// how many B-bit slots of a word sit below bit 23 (read without a shift).
template <int kBits> struct QTraits;
template <> struct QTraits<8> { static constexpr int kBlocks = 1, kVecs = 2, kUnroll = 2, kDirect = 2; };
template <> struct QTraits<4> { static constexpr int kBlocks = 1, kVecs = 1, kUnroll = 4, kDirect = 5; };
template <> struct QTraits<3> { static constexpr int kBlocks = 4, kVecs = 3, kUnroll = 1, kDirect = 7; };
template <> struct QTraits<2> { static constexpr int kBlocks = 2, kVecs = 1, kUnroll = 4, kDirect = 11; };

template <int kBits> constexpr int tile_codes() { return QTraits<kBits>::kBlocks * kRepackBlockK; }

__device__ __forceinline__ float pow2f(int e) { return __int_as_float((127 + e) << 23); }

// c - z of code i (0..31) of one block: words w[0..kBits) (plus t, the 6-bit value of codes 30/31
// for 3 bits); add[p] = -(2^(23 - kBits*p) + z).
template <int kBits>
__device__ __forceinline__ float code_minus_zero(const uint32_t* w, uint32_t t, int i, const float* add) {
  constexpr int kPerWord = kBits == 3 ? 10 : 32 / kBits;
  constexpr int kDirect = QTraits<kBits>::kDirect;
  constexpr uint32_t kMask = (1u << kBits) - 1u;
  uint32_t v;
  int p;
  if (kBits == 3 && i >= 30) {
    v = t;
    p = i - 30;
  } else {
    const int slot = i % kPerWord;
    v = w[i / kPerWord];
    p = slot;
    if (slot >= kDirect) {
      v >>= kBits * kDirect;
      p = slot - kDirect;
    }
  }
  const float f = __int_as_float(static_cast<int>((v & (kMask << (kBits * p))) | 0x4B000000u));
  return fmaf(f, pow2f(-kBits * p), add[p]);
}

template <typename T>
__device__ __forceinline__ void unpack_x8(const uint4 raw, float (&f)[8]) {
  const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int i = 0; i < 8; ++i) f[i] = to_f32(e[i]);
}

template <typename T>
__device__ __forceinline__ void load_x8(const T* p, float (&f)[8]) {
  unpack_x8<T>(__ldg(reinterpret_cast<const uint4*>(p)), f);
}

// Largest staged x (bytes of dynamic shared memory without the opt-in attribute).
constexpr int64_t kSmemXMaxBytes = 48 * 1024;

// Slot of the 16-byte x chunk c (positions 8c..8c+7) in shared memory. A 128-bit shared load is
// served 8 lanes at a time; lane l reads chunk 4b + q of its block b = kBlocks·tile + bb (tile ≡ l
// mod 32, q = 0..3 the same for all lanes), so unswizzled 8 lanes would hit 2 (int4/8) or 1
// (int2/3) distinct 16-byte bank groups. XOR-ing the low 3 bits with tile & 7 = (c >> shift) & 7
// makes the 8 lanes' slots distinct mod 8 (int4/8: low bits 4·(tile & 1) + q, and
// t -> t ^ 4·(t & 1) is a bijection). Slots stay inside their aligned group of 8 chunks, and the
// staging writes (8 consecutive chunks per 8 threads) are conflict-free too.
template <int kBits> __device__ __forceinline__ int x_slot(int c) {
  constexpr int kShift = 2 + (QTraits<kBits>::kBlocks == 4 ? 2 : QTraits<kBits>::kBlocks == 2 ? 1 : 0);
  return c ^ ((c >> kShift) & 7);
}

struct QgemvArgs {
  const uint32_t* qweight;     // [N, words_per_row]
  const uint32_t* scale_zero;  // [N, Gp]
  const void* x;               // [M, ldx] act (ldx = Kp: x itself or the staging buffer)
  void* out;                   // [M, N] act
  const void* bias;            // [N] or nullptr
  DType bias_dtype;
  int64_t n, m, ldx, words_per_row, groups_padded;
  int tiles;        // Kp / tile_codes
  int group_shift;  // position p is in group p >> group_shift
  int m_chunks;     // ceil(M / kMaxRowsM)
  bool accumulate;
};

// One block of 32 codes for every (input row t, weight row r): acc[t][r] += s_r · Σ (c - z)·x, or
// for NF4 (kNF4: 4-bit codes into `levels`, the staged kNF4Values; sz = f32 absmax) s_r · Σ level·x.
// xs: the staged x (kSmemX, M = 1) or nullptr (x from xr).
template <typename T, int kBits, int kRowsM, bool kSmemX, bool kNF4>
__device__ __forceinline__ void block_product(const uint32_t (&w)[kRowsPerWarp][kBits], const uint32_t (&sz)[kRowsPerWarp],
                                              const T* const (&xr)[kRowsM], const uint4* xs, const float* levels,
                                              int64_t k0, float (&acc)[kRowsM][kRowsPerWarp]) {
  static_assert(!kNF4 || kBits == 4, "NF4 codes are 4 bits");
  constexpr int kDirect = QTraits<kBits>::kDirect;
  float add[kRowsPerWarp][kDirect], scale[kRowsPerWarp];
  uint32_t t[kRowsPerWarp];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    t[r] = kBits == 3 ? (w[r][0] >> 30) | ((w[r][1] >> 30) << 2) | ((w[r][2 % kBits] >> 30) << 4) : 0u;
    if constexpr (kNF4) {
      scale[r] = __uint_as_float(sz[r]);  // the block's absmax; the levels carry the sign and shape
    } else {
      scale[r] = __half2float(__ushort_as_half(static_cast<unsigned short>(sz[r] & 0xffffu)));
      const float z = __half2float(__ushort_as_half(static_cast<unsigned short>(sz[r] >> 16)));
#pragma unroll
      for (int p = 0; p < kDirect; ++p) add[r][p] = -z - pow2f(23 - kBits * p);
    }
  }
  float dot[kRowsM][kRowsPerWarp] = {};
#pragma unroll
  for (int q = 0; q < kRepackBlockK / 8; ++q) {
    float cz[kRowsPerWarp][8];
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r)
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        if constexpr (kNF4) {
          cz[r][e] = levels[(w[r][q] >> (4 * e)) & 15u];
        } else {
          cz[r][e] = code_minus_zero<kBits>(w[r], t[r], q * 8 + e, add[r]);
        }
      }
#pragma unroll
    for (int m = 0; m < kRowsM; ++m) {
      float xv[8];
      if constexpr (kSmemX) {
        unpack_x8<T>(xs[x_slot<kBits>(static_cast<int>(k0 >> 3) + q)], xv);
      } else {
        load_x8(xr[m] + k0 + q * 8, xv);
      }
#pragma unroll
      for (int r = 0; r < kRowsPerWarp; ++r)
#pragma unroll
        for (int e = 0; e < 8; ++e) dot[m][r] = fmaf(cz[r][e], xv[e], dot[m][r]);
    }
  }
#pragma unroll
  for (int m = 0; m < kRowsM; ++m)
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) acc[m][r] = fmaf(scale[r], dot[m][r], acc[m][r]);
}

// Only the M = 1 kernel loops over jobs: with more input rows the loop costs registers (int2/int3
// M = 2..8 went from ~165 to 255 + spills), and a row pair is already several batches of work
// (the x rows multiply the compute per loaded byte), so those keep one job per warp.
template <int kRowsM> inline constexpr bool kPersistent = kRowsM == 1;

// The weight rows of one job (a pair of output rows for one chunk of input rows).
struct QgemvRows {
  const uint4* w[kRowsPerWarp];
  const uint32_t* sz[kRowsPerWarp];
};

__device__ __forceinline__ QgemvRows qgemv_rows(const QgemvArgs& a, int64_t job) {
  QgemvRows rs;
  const int64_t row0 = job / a.m_chunks * kRowsPerWarp;
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int64_t row = row0 + r < a.n ? row0 + r : row0;
    rs.w[r] = reinterpret_cast<const uint4*>(a.qweight + row * a.words_per_row);
    rs.sz[r] = a.scale_zero + row * a.groups_padded;
  }
  return rs;
}

// Tiles base + 32u (u < kU) of both rows of a job: codes and the scale/zero word of each block.
template <int kBits>
__device__ __forceinline__ void qgemv_load_batch(const QgemvArgs& a, const QgemvRows& rs,
                                                 uint4 (&wv)[QTraits<kBits>::kUnroll][kRowsPerWarp][QTraits<kBits>::kVecs],
                                                 uint32_t (&szv)[QTraits<kBits>::kUnroll][kRowsPerWarp][QTraits<kBits>::kBlocks],
                                                 int base) {
  using Tr = QTraits<kBits>;
#pragma unroll
  for (int u = 0; u < Tr::kUnroll; ++u) {
    const int tile = base + 32 * u;
    const bool ok = tile < a.tiles;
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
#pragma unroll
      for (int v = 0; v < Tr::kVecs; ++v) wv[u][r][v] = ok ? __ldg(rs.w[r] + tile * Tr::kVecs + v) : make_uint4(0, 0, 0, 0);
#pragma unroll
      for (int b = 0; b < Tr::kBlocks; ++b) {
        const int64_t pos = static_cast<int64_t>(tile) * tile_codes<kBits>() + b * kRepackBlockK;
        szv[u][r][b] = ok ? __ldg(rs.sz[r] + (pos >> a.group_shift)) : 0u;
      }
    }
  }
}

}  // namespace

// Persistent: the grid holds about as many warps as fit on the GPU at once, and warp w runs jobs
// w, w + W, w + 2W, .. (W = warps in the grid; job j = row pair j / m_chunks, input chunk
// j % m_chunks, so warps running at the same time share weight rows through L2). The last batch
// of a job prefetches the first batch of the warp's next job, so a warp streams weights without a
// gap between rows: at K = 4096 int4 a row pair is a single batch, and without this each warp
// loaded once, waited a full memory latency with nothing in flight, computed and exited.
// kSmemX (M = 1 only): x staged in dynamic shared memory, a.ldx (= Kp) elements at x_slot order.
// kNF4: the block first stages the 16 levels in shared memory (before any warp returns).
template <typename T, int kBits, int kRowsM, bool kSmemX, bool kNF4>
__global__ void __launch_bounds__(kQgemvWarps * 32) qgemv_kernel(const QgemvArgs a) {
  static_assert(!kSmemX || kRowsM == 1, "x is staged for one input row");
  __shared__ float levels[kNF4 ? 16 : 1];
  if constexpr (kNF4) stage_nf4_levels(levels);
  using Tr = QTraits<kBits>;
  constexpr int kU = Tr::kUnroll, kV = Tr::kVecs, kB = Tr::kBlocks;
  extern __shared__ uint4 xs_smem[];
  const int lane = threadIdx.x & 31;
  // Jobs fit an int (the launcher checks).
  const int stride = static_cast<int>(gridDim.x) * kQgemvWarps;
  const int jobs = static_cast<int>((a.n + kRowsPerWarp - 1) / kRowsPerWarp * a.m_chunks);
  int job = static_cast<int>(blockIdx.x) * kQgemvWarps + (threadIdx.x >> 5);
  if (!kSmemX && job >= jobs) return;  // no barriers below (the staging warps return after theirs)
  const bool active = !kSmemX || job < jobs;
  QgemvRows rows = qgemv_rows(a, kSmemX && !active ? 0 : job);
  uint4 cur[kU][kRowsPerWarp][kV], nxt[kU][kRowsPerWarp][kV];
  uint32_t cur_sz[kU][kRowsPerWarp][kB], nxt_sz[kU][kRowsPerWarp][kB];
  // The first weight batch is in flight while x is staged.
  if (active) qgemv_load_batch<kBits>(a, rows, cur, cur_sz, lane);
  wait_for_prior_grids();  // x and out come from the previous kernels; the weights do not
  if constexpr (kSmemX) {
    const int chunks = static_cast<int>(a.ldx >> 3);
    const uint4* xg = static_cast<const uint4*>(a.x);
    for (int c = static_cast<int>(threadIdx.x); c < chunks; c += kQgemvWarps * 32) xs_smem[x_slot<kBits>(c)] = __ldg(xg + c);
    __syncthreads();
  }
  if (!active) return;
  T* out = static_cast<T*>(a.out);
  while (true) {
    const int chunk = static_cast<int>(job % a.m_chunks);
    const int64_t row0 = job / a.m_chunks * kRowsPerWarp;
    const T* xr[kRowsM];
#pragma unroll
    for (int m = 0; m < kRowsM; ++m) {
      const int64_t t = static_cast<int64_t>(chunk) * kMaxRowsM + m;
      xr[m] = static_cast<const T*>(a.x) + (t < a.m ? t : a.m - 1) * a.ldx;
    }
    const int next_job = job + stride;
    const bool has_next = kPersistent<kRowsM> && next_job < jobs;
    float acc[kRowsM][kRowsPerWarp] = {};
    // Warp-uniform trip count (lanes past the last tile still prefetch the next job).
    for (int base0 = 0; base0 < a.tiles; base0 += 32 * kU) {
      // One load site (two would double the live address registers): the job's next batch, or
      // after its last one the next job's first (its pointers made here, not kept live).
      const bool in_job = base0 + 32 * kU < a.tiles;
      if (in_job || has_next) {
        const QgemvRows src = in_job ? rows : qgemv_rows(a, next_job);
        qgemv_load_batch<kBits>(a, src, nxt, nxt_sz, in_job ? base0 + 32 * kU + lane : lane);
      }
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        const int tile = base0 + lane + 32 * u;
        if (tile >= a.tiles) break;
#pragma unroll
        for (int b = 0; b < kB; ++b) {
          uint32_t w[kRowsPerWarp][kBits], sz[kRowsPerWarp];
#pragma unroll
          for (int r = 0; r < kRowsPerWarp; ++r) {
            const uint32_t* words = reinterpret_cast<const uint32_t*>(cur[u][r]);
#pragma unroll
            for (int j = 0; j < kBits; ++j) w[r][j] = words[b * kBits + j];
            sz[r] = cur_sz[u][r][b];
          }
          const int64_t k0 = static_cast<int64_t>(tile) * tile_codes<kBits>() + b * kRepackBlockK;
          block_product<T, kBits, kRowsM, kSmemX, kNF4>(w, sz, xr, kSmemX ? xs_smem : nullptr, levels, k0, acc);
        }
      }
#pragma unroll
      for (int u = 0; u < kU; ++u)
#pragma unroll
        for (int r = 0; r < kRowsPerWarp; ++r) {
#pragma unroll
          for (int v = 0; v < kV; ++v) cur[u][r][v] = nxt[u][r][v];
#pragma unroll
          for (int b = 0; b < kB; ++b) cur_sz[u][r][b] = nxt_sz[u][r][b];
        }
    }
#pragma unroll
    for (int m = 0; m < kRowsM; ++m) {
      const int64_t t = static_cast<int64_t>(chunk) * kMaxRowsM + m;
#pragma unroll
      for (int r = 0; r < kRowsPerWarp; ++r) {
        const float v = warp_sum(acc[m][r]);
        const int64_t row = row0 + r;
        if (lane == 0 && row < a.n && t < a.m) {
          T* o = out + t * a.n + row;
          *o = from_f32<T>(v + (a.bias != nullptr ? load_any(a.bias, a.bias_dtype, row) : 0.f) +
                           (a.accumulate ? to_f32(*o) : 0.f));
        }
      }
    }
    if (!has_next) break;
    job = next_job;
    rows = qgemv_rows(a, job);
  }
}

// xs[t, p] = x[t, perm[p]] (x[t, p] without perm), 0 for padding positions p (p >= K or perm -1).
template <typename T>
__global__ void qgemv_stage_x_kernel(T* __restrict__ xs,                // [M, Kp]
                                     const T* __restrict__ x,           // [M, K]
                                     const int32_t* __restrict__ perm,  // [Kp] or nullptr
                                     int64_t m, int64_t k, int64_t kp) {
  wait_for_prior_grids();
  const int64_t total = m * kp;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = i / kp, p = i - t * kp;
    const int64_t col = perm != nullptr ? perm[p] : (p < k ? p : -1);
    xs[i] = col >= 0 ? x[t * k + col] : from_f32<T>(0.f);
  }
}

namespace {

// The tensor-core kernel gathers act-order x itself at decode sizes.
bool tc_gathers(const QgemvWeight& w, int64_t rows) {
  return w.tc != nullptr && w.plan.permuted && rows <= kQgemvTcGatherMaxRows;
}

bool x_in_place(const QgemvWeight& w, int64_t rows, const void* x_data) {
  if (tc_gathers(w, rows)) return true;
  const RepackPlan& plan = w.plan;
  return !plan.permuted && plan.k == plan.k_padded && reinterpret_cast<uintptr_t>(x_data) % 16 == 0;
}

Status check_qgemv(View out, View x, const QgemvWeight& w, View bias, bool accumulate) {
  const RepackPlan& plan = w.plan;
  RETURN_IF_ERROR(expect_act("qgemv", "x", x));
  RETURN_IF_ERROR(expect_act("qgemv", "out", out));
  if (out.dtype != x.dtype) return invalid_argument("qgemv: out is {} but x is {}", dtype_name(out.dtype), dtype_name(x.dtype));
  RETURN_IF_ERROR(expect_shape2("qgemv", "x", x, x.rows(), plan.k));
  RETURN_IF_ERROR(expect_shape2("qgemv", "out", out, x.rows(), plan.n));
  if ((w.qweight == nullptr && w.tc == nullptr) || w.scale_zero == nullptr || (plan.permuted && w.perm == nullptr))
    return invalid_argument("qgemv: the repacked weight [{}, {}] has no device data", plan.n, plan.k);
  if (plan.bits != 2 && plan.bits != 3 && plan.bits != 4 && plan.bits != 8)
    return invalid_argument("qgemv: bits {} (expected 2, 3, 4 or 8)", plan.bits);
  if (w.tc != nullptr && !tc_layout_supported(plan.bits, plan.nf4, plan.group_size, plan.permuted))
    return invalid_argument("qgemv: the tc layout holds int4, int8 without act-order, or NF4 with blocks of >= {}",
                            kTcChunkK);
  if (plan.nf4 && plan.bits != 4) return invalid_argument("qgemv: nf4 with {} bits", plan.bits);
  if (plan.k_padded % kRepackTileK != 0 || plan.k_padded / kRepackBlockK > 0x7fffffff)
    return invalid_argument("qgemv: padded K {} is not a multiple of {} or too large", plan.k_padded, kRepackTileK);
  if (bias.data != nullptr) {
    if (accumulate) return invalid_argument("qgemv: accumulate with a bias is not supported");
    RETURN_IF_ERROR(expect_cuda("qgemv", "bias", bias));
    if (bias.numel() != plan.n || !is_float_dtype_cuda(bias.dtype))
      return invalid_argument("qgemv: bias {} {} does not match [{}] float", bias.shape.str(), dtype_name(bias.dtype), plan.n);
  }
  if (out.data == x.data) return invalid_argument("qgemv: out must not alias x");
  return Status::ok();
}

// Blocks of the persistent grid: as many warps as fit on the device at once (occupancy of this
// instance × SMs), then fewer so that every warp runs the same number of jobs (the last round
// would otherwise leave most warps idle while a few finish).
template <typename T, int kBits, int kRowsM, bool kSmemX, bool kNF4>
Result<unsigned> persistent_blocks(int64_t jobs, size_t smem) {
  // Blocks per SM depend on the staged x's bytes (a multiple of 256: Kp·2): cached per size.
  static std::atomic<int> cached[kSmemXMaxBytes / 256 + 1] = {};
  std::atomic<int>& slot = cached[std::min<size_t>(smem / 256, kSmemXMaxBytes / 256)];
  int per_sm = slot.load(std::memory_order_relaxed);
  if (per_sm == 0) {
    int b = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&b, qgemv_kernel<T, kBits, kRowsM, kSmemX, kNF4>, kQgemvWarps * 32,
                                                      smem) != cudaSuccess) {
      (void)cudaGetLastError();
      b = 1;
    }
    per_sm = std::max(b, 1);
    slot.store(per_sm, std::memory_order_relaxed);
  }
  ASSIGN_OR_RETURN(const int sms, current_sm_count());
  const int64_t slots = static_cast<int64_t>(per_sm) * sms * kQgemvWarps;
  const int64_t per_warp = ceil_div(jobs, slots);
  const int64_t blocks = ceil_div(ceil_div(jobs, per_warp), kQgemvWarps);
  if (blocks > 0x7fffffff) return invalid_argument("qgemv: {} blocks exceed one grid", blocks);
  return static_cast<unsigned>(blocks);
}

template <typename T, int kBits, int kRowsM, bool kSmemX, bool kNF4>
Status launch_rows(const QgemvArgs& a, cudaStream_t stream) {
  const int64_t jobs = ceil_div(a.n, kRowsPerWarp) * a.m_chunks;
  if (jobs > 0x3fffffff) return invalid_argument("qgemv: {} row pairs x input chunks is too many", jobs);
  const size_t smem = kSmemX ? static_cast<size_t>(a.ldx) * sizeof(T) : 0;
  unsigned blocks = static_cast<unsigned>(ceil_div(jobs, kQgemvWarps));
  if (kPersistent<kRowsM>) {
    ASSIGN_OR_RETURN(blocks, (persistent_blocks<T, kBits, kRowsM, kSmemX, kNF4>(jobs, smem)));
  }
  CUDA_RETURN_IF_ERROR(
      launch_kernel(qgemv_kernel<T, kBits, kRowsM, kSmemX, kNF4>, blocks, kQgemvWarps * 32, smem, stream, a));
  return Status::ok();
}

template <typename T, int kBits, bool kNF4 = false>
Status launch_bits(const QgemvArgs& a, cudaStream_t stream) {
  if (a.m == 1) {
    if (a.ldx * static_cast<int64_t>(sizeof(T)) <= kSmemXMaxBytes) return launch_rows<T, kBits, 1, true, kNF4>(a, stream);
    return launch_rows<T, kBits, 1, false, kNF4>(a, stream);
  }
  if (a.m == 2) return launch_rows<T, kBits, 2, false, kNF4>(a, stream);
  if (a.m <= 4) return launch_rows<T, kBits, 4, false, kNF4>(a, stream);
  return launch_rows<T, kBits, kMaxRowsM, false, kNF4>(a, stream);
}

}  // namespace

size_t qgemv_scratch_bytes(const QgemvWeight& w, int64_t rows, DType act, const void* x_data) {
  if (x_in_place(w, rows, x_data)) return 0;
  return static_cast<size_t>(rows * w.plan.k_padded * dtype_size(act));
}

Status qgemv_cuda(View out, View x, const QgemvWeight& w, View bias, bool accumulate, void* scratch,
                  cudaStream_t stream) {
  RETURN_IF_ERROR(check_qgemv(out, x, w, bias, accumulate));
  const RepackPlan& plan = w.plan;
  const int64_t m = x.rows();
  if (m == 0) return Status::ok();
  const bool in_place = x_in_place(w, m, x.data);
  if (!in_place && scratch == nullptr) return invalid_argument("qgemv: x needs a staging buffer but scratch is null");
  QgemvArgs a{};
  a.qweight = w.qweight;
  a.scale_zero = w.scale_zero;
  a.x = in_place ? x.data : scratch;
  a.out = out.data;
  a.bias = bias.data;
  a.bias_dtype = bias.dtype;
  a.n = plan.n;
  a.m = m;
  a.ldx = plan.k_padded;
  a.words_per_row = plan.words_per_row;
  a.groups_padded = plan.groups_padded;
  a.group_shift = plan.group_shift;
  a.m_chunks = static_cast<int>(ceil_div(m, kMaxRowsM));
  a.accumulate = accumulate;
  return dispatch_act(x.dtype, "qgemv", [&](auto tag) -> Status {
    using T = decltype(tag);
    if (!in_place) {
      constexpr int kThreads = 256;
      CUDA_RETURN_IF_ERROR(launch_kernel(qgemv_stage_x_kernel<T>, grid_for(m * plan.k_padded, kThreads), kThreads, 0,
                                         stream, static_cast<T*>(scratch), x.as<const T>(), w.perm, m, plan.k,
                                         plan.k_padded));
    }
    if (w.tc != nullptr) {
      const bool gather = tc_gathers(w, m);
      const QgemvWeight* ws[] = {&w};
      return qgemv_tc_launch<T>(&out, ws, &bias, 1, a.x, gather ? plan.k : plan.k_padded, m, gather, accumulate, stream);
    }
    switch (plan.bits) {
      case 8: a.tiles = static_cast<int>(plan.k_padded / tile_codes<8>()); return launch_bits<T, 8>(a, stream);
      case 4:
        a.tiles = static_cast<int>(plan.k_padded / tile_codes<4>());
        return plan.nf4 ? launch_bits<T, 4, true>(a, stream) : launch_bits<T, 4>(a, stream);
      case 3: a.tiles = static_cast<int>(plan.k_padded / tile_codes<3>()); return launch_bits<T, 3>(a, stream);
      default: a.tiles = static_cast<int>(plan.k_padded / tile_codes<2>()); return launch_bits<T, 2>(a, stream);
    }
  });
}

bool qgemv_groupable(View x, const QgemvWeight* const* ws, int n) {
  if (n < 1 || n > kQgemvMaxGroup) return false;
  for (int i = 0; i < n; ++i) {
    const RepackPlan& p = ws[i]->plan;
    if (ws[i]->tc == nullptr || p.permuted || p.k != ws[0]->plan.k || p.k_padded != ws[0]->plan.k_padded ||
        p.group_shift != ws[0]->plan.group_shift || !x_in_place(*ws[i], x.rows(), x.data))
      return false;
  }
  return true;
}

Status qgemv_group_cuda(const View* outs, View x, const QgemvWeight* const* ws, const View* biases, int n,
                        cudaStream_t stream) {
  if (!qgemv_groupable(x, ws, n)) return invalid_argument("qgemv_group: these {} weights cannot share a launch", n);
  for (int i = 0; i < n; ++i) {
    const Status st = check_qgemv(outs[i], x, *ws[i], biases[i], false);
    if (!st.is_ok()) return invalid_argument("qgemv_group: weight {}: {}", i, st.message());
  }
  if (x.rows() == 0) return Status::ok();
  return dispatch_act(x.dtype, "qgemv_group", [&](auto tag) -> Status {
    using T = decltype(tag);
    return qgemv_tc_launch<T>(outs, ws, biases, n, x.data, ws[0]->plan.k_padded, x.rows(), false, false, stream);
  });
}

}  // namespace compactor
