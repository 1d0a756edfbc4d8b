// Tensor-core variant of the fused int4 GEMV/skinny GEMM (qgemv.cuh, QgemvKernel::kTensorCores):
// y[M, N] = x[M, K] · dq(W)ᵀ with mma.m16n8k16, W as the A operand (16 output rows × 16 positions)
// and xᵀ as B (16 positions × 8 input rows), f32 accumulators. The codes come in the tc layout of
// formats/quant_repack.h, where one coalesced 16-byte load per lane holds its A fragments for four
// k16 steps; a fragment register is made by one AND-OR against the bits of 1024 (f16) / 128 (bf16)
// and one packed subtraction of (1024 + zero), exact, so the tensor cores multiply c - z by x in
// f32 and the scale is applied once per group (per 32 or 64 positions) to the f32 products. The
// layout maps the mma's k index so that a lane's B fragment of one step is 4 consecutive positions
// of x: one 8-byte load, straight from x (L1-resident: every block reads all of it), no staging.
// A block owns 16 output rows and up to 64 input rows (kTiles n8 tiles) and streams that row
// tile's codes: its 8 warps split K by 64-position chunks (consecutive warps take consecutive 512-byte
// chunks, so a block reads 4 KB of contiguous codes at a time). Each lane keeps kTcStages - 2 chunks
// in flight through a per-warp cp.async ring in shared memory, which costs no registers (a register
// double buffer held 2 chunks per lane at 71-96 registers and reached ~50% of HBM at M = 1), so
// 4 blocks (32 warps) fit an SM; the warps' partial sums meet once, in shared memory, at the end.
// One block per row tile (no persistence).
// Act-order with up to 8 input rows (kGather): x is read through the permutation here (four
// indices and four 16-bit loads per B fragment pair) instead of a staging launch per matmul.
// Test: build-*/tests/test_cuda_qgemm (on a GPU machine). Bench: build-*/bench/bench_qgemm.
#include <atomic>

#include "backend/cuda/device_utils.cuh"
#include "backend/cuda/mma.cuh"
#include "backend/cuda/qgemv_tc.cuh"

namespace compactor {

namespace {

constexpr int kTcWarps = 8;
// Chunk slots per warp in the shared-memory ring: kTcStages - 2 chunks (512 bytes each) stay in
// flight while one is multiplied, without holding registers.
constexpr int kTcStages = 8;
// Blocks per SM the register budget is set for (__launch_bounds__).
template <int kTiles> inline constexpr int kTcMinBlocks = kTiles == 1 ? 4 : kTiles == 2 ? 2 : 1;
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
// (a & 0x000F000F) | magic as one LOP3: written out because the compiler emits an AND and an OR
// when both constants are immediates (a LOP3 takes one), twice the instructions of the conversion.
__device__ __forceinline__ uint32_t nibbles_or(uint32_t a, uint32_t magic) {
  uint32_t d;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(d) : "r"(a), "n"(0x000F000F), "r"(magic));
  return d;
}

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

// One 64-position chunk: four k16 steps of mma per n8 tile; sz = scale/zero words of rows g, g+8
// (kSplit, group size 32: for each half of the chunk). xr[j]: the x row of tile j, already offset
// by 4t; p0: the chunk's first position.
template <typename T, int kTiles, bool kGather, bool kSplit>
__device__ __forceinline__ void tc_chunk(const uint4& w, const uint32_t* sz, const unsigned short* const (&xr)[kTiles],
                                         const int32_t* perm, int p0, int t, float (&acc)[kTiles][4]) {
  const uint32_t words[4] = {w.x, w.y, w.z, w.w};
  float d[kTiles][4] = {};
  uint32_t z_lo = 0, z_hi = 0;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    if (h == 0 || kSplit) {
      z_lo = zero_pair<T>(sz[2 * h]);
      z_hi = zero_pair<T>(sz[2 * h + 1]);
    }
    uint2 xb[kTiles][2];
#pragma unroll
    for (int s2 = 0; s2 < 2; ++s2)
#pragma unroll
      for (int j = 0; j < kTiles; ++j) {
        const int s = 2 * h + s2;
        // One pointer per chunk, steps at immediate offsets (16 positions = 4 uint2).
        xb[j][s2] = kGather ? x_quad_gather(xr[j], perm, p0 + 16 * s + 4 * t)
                            : __ldg(reinterpret_cast<const uint2*>(xr[j] + p0) + 4 * s);
      }
#pragma unroll
    for (int s2 = 0; s2 < 2; ++s2) {
      const uint32_t word = words[2 * h + s2];
      uint32_t a[4];
      a[0] = sub2<T>(nibbles_or(word, tc_magic<T>()), z_lo);        // row g,   positions 4t, 4t+1
      a[1] = sub2<T>(nibbles_or(word >> 4, tc_magic<T>()), z_hi);   // row g+8, positions 4t, 4t+1
      a[2] = sub2<T>(nibbles_or(word >> 8, tc_magic<T>()), z_lo);   // row g,   positions 4t+2, 4t+3
      a[3] = sub2<T>(nibbles_or(word >> 12, tc_magic<T>()), z_hi);  // row g+8, positions 4t+2, 4t+3
#pragma unroll
      for (int j = 0; j < kTiles; ++j) mma::mma16816<T>(d[j], a, xb[j][s2].x, xb[j][s2].y);
    }
    if (h == 1 || kSplit) {
      const int i = kSplit ? 2 * h : 0;  // without kSplit, sz holds the words of the first half only
      const float s_lo = sz_scale(sz[i]), s_hi = sz_scale(sz[i + 1]);
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

// 4 bytes global -> shared (cp.async.ca: the scale/zero words are re-read by neighbouring warps).
__device__ __forceinline__ void cp_async4(void* dst, const void* src) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(mma::smem_addr(dst)), "l"(src) : "memory");
}

// Dynamic shared memory of one block: the code ring, then the scale/zero ring (kSz words per lane
// and slot).
constexpr size_t tc_ring_bytes(int sz_words) { return static_cast<size_t>(kTcWarps) * kTcStages * 32 * (16 + 4 * sz_words); }

}  // namespace

// Block b: row tile b / m_blocks, input rows 64 · (b % m_blocks) ...; warp w multiplies chunks
// w, w + 8, w + 16, .. of the row tile (i-th chunk of the warp: c = w + 8i). Each lane copies its
// 16 bytes of a chunk (and the chunk's scale/zero words) with cp.async into slot i % kTcStages of
// its warp's ring and reads back only what it copied itself, so no barrier is needed: chunk i is
// multiplied once the lane's copy group i has landed, then chunk i + kTcStages - 1 is issued into
// the slot multiplied in the previous step.
template <typename T, int kTiles, bool kGather, bool kSplit>
__global__ void __launch_bounds__(kTcWarps * 32, kTcMinBlocks<kTiles>) qgemv_tc_kernel(const QgemvTcArgs a) {
  constexpr int kSz = kSplit ? 4 : 2;
  __shared__ float partial[kTcWarps][kTiles][4][32];
  extern __shared__ uint4 tc_ring[];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int m_blocks = static_cast<int>((a.m + kTcMaxRowsM - 1) / kTcMaxRowsM);
  const int64_t row_tile = blockIdx.x / m_blocks;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x % m_blocks) * kTcMaxRowsM;
  const int64_t row_lo = row_tile * kTcRows + g, row_hi = row_lo + 8;
  const uint4* wt = a.tc + row_tile * a.chunks * 32 + lane;
  const uint32_t* sz_lo = a.scale_zero + (row_lo < a.n ? row_lo : a.n - 1) * a.groups_padded;
  const uint32_t* sz_hi = a.scale_zero + (row_hi < a.n ? row_hi : a.n - 1) * a.groups_padded;
  uint4* codes = tc_ring + warp * kTcStages * 32 + lane;  // slot s: codes[32 s]
  uint32_t* szs = reinterpret_cast<uint32_t*>(tc_ring + kTcWarps * kTcStages * 32) + (warp * kTcStages * 32 + lane) * kSz;
  const unsigned short* xr[kTiles];
#pragma unroll
  for (int j = 0; j < kTiles; ++j) {
    const int64_t xm = m0 + 8 * j + g;
    // Input rows past M read row 0: their D columns are never stored, and a column of the mma
    // does not mix into the others, so no predicate (and no branch) is needed on the x loads.
    xr[j] = static_cast<const unsigned short*>(a.x) + (xm < a.m ? xm : 0) * a.ldx + (kGather ? 0 : 4 * t);
  }
  const int my_chunks = (a.chunks - warp + kTcWarps - 1) / kTcWarps;
  // Copy group i: chunk i of the warp (empty past the last, so that the group count stays in step).
  auto issue = [&](int i) {
    if (i < my_chunks) {
      const int c = warp + i * kTcWarps, slot = i % kTcStages;
      mma::cp_async16(codes + slot * 32, wt + c * 32, true);
#pragma unroll
      for (int hf = 0; hf < kSz / 2; ++hf) {
        const int grp = (c * kTcChunkK + 32 * hf) >> a.group_shift;
        cp_async4(szs + slot * 32 * kSz + 2 * hf, sz_lo + grp);
        cp_async4(szs + slot * 32 * kSz + 2 * hf + 1, sz_hi + grp);
      }
    }
    mma::cp_async_commit();
  };
#pragma unroll
  for (int i = 0; i < kTcStages - 1; ++i) issue(i);
  float acc[kTiles][4] = {};
  for (int i = 0; i < my_chunks; ++i) {
    mma::cp_async_wait<kTcStages - 2>();  // groups 0..i of this lane have landed
    const int slot = i % kTcStages;
    const uint4 w = codes[slot * 32];
    uint32_t sz[kSz];
#pragma unroll
    for (int e = 0; e < kSz; ++e) sz[e] = szs[slot * 32 * kSz + e];
    tc_chunk<T, kTiles, kGather, kSplit>(w, sz, xr, a.perm, (warp + i * kTcWarps) * kTcChunkK, t, acc);
    issue(i + kTcStages - 1);  // into the slot of chunk i - 1, read in the previous step
  }
  mma::cp_async_wait<0>();
#pragma unroll
  for (int j = 0; j < kTiles; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) partial[warp][j][e][lane] = acc[j][e];
  __syncthreads();
  // D fragment element e of lane (g, t) in tile j: row g + 8 (e >> 1), input row 8j + 2t + (e & 1).
  T* out = static_cast<T*>(a.out);
  for (int idx = threadIdx.x; idx < kTiles * 4 * 32; idx += blockDim.x) {
    const int j = idx / 128, e = (idx / 32) % 4, ln = idx % 32;
    const int64_t row = row_tile * kTcRows + (ln >> 2) + 8 * (e >> 1);
    const int64_t m = m0 + 8 * j + 2 * (ln & 3) + (e & 1);
    if (row >= a.n || m >= a.m) continue;
    float v = 0.f;
#pragma unroll
    for (int w = 0; w < kTcWarps; ++w) v += partial[w][j][e][ln];
    T* o = out + m * a.n + row;
    *o = from_f32<T>(v + (a.bias != nullptr ? load_any(a.bias, a.bias_dtype, row) : 0.f) +
                     (a.accumulate ? to_f32(*o) : 0.f));
  }
}

namespace {

// The ring's dynamic shared memory may exceed 48 KB, which needs an opt-in per device and kernel.
template <typename T, int kTiles, bool kGather, bool kSplit>
Status allow_ring() {
  int device = 0;
  CUDA_RETURN_IF_ERROR(cudaGetDevice(&device));
  static std::atomic<uint64_t> configured{0};  // bit d: device d done
  const uint64_t bit = device < 64 ? uint64_t{1} << device : 0;
  if (bit != 0 && (configured.load(std::memory_order_acquire) & bit) != 0) return Status::ok();
  CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(qgemv_tc_kernel<T, kTiles, kGather, kSplit>,
                                            cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            static_cast<int>(tc_ring_bytes(kSplit ? 4 : 2))));
  configured.fetch_or(bit, std::memory_order_acq_rel);
  return Status::ok();
}

template <typename T, int kTiles, bool kGather = false>
Status launch_tc(const QgemvTcArgs& a, cudaStream_t stream) {
  const int64_t blocks = ceil_div(a.n, kTcRows) * ceil_div(a.m, kTcMaxRowsM);
  if (blocks > 0x7fffffff) return invalid_argument("qgemv (tensor cores): {} row tiles x input blocks is too many", blocks);
  // 32-bit chunk, group and position indices inside the kernel.
  if (static_cast<int64_t>(a.chunks) * kTcChunkK > 0x3fffffff || a.groups_padded > 0x3fffffff)
    return invalid_argument("qgemv (tensor cores): K = {} positions is too large", static_cast<int64_t>(a.chunks) * kTcChunkK);
  const unsigned grid = static_cast<unsigned>(blocks);
  if (a.group_shift == 5) {
    RETURN_IF_ERROR((allow_ring<T, kTiles, kGather, true>()));
    qgemv_tc_kernel<T, kTiles, kGather, true><<<grid, kTcWarps * 32, tc_ring_bytes(4), stream>>>(a);
  } else {
    RETURN_IF_ERROR((allow_ring<T, kTiles, kGather, false>()));
    qgemv_tc_kernel<T, kTiles, kGather, false><<<grid, kTcWarps * 32, tc_ring_bytes(2), stream>>>(a);
  }
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
