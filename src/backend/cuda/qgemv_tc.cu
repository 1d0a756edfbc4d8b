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
// chunks, so a block reads 4 KB of contiguous codes per batch), each lane keeping the next batch of
// kTcUnroll chunks in flight in registers while it multiplies the current one; the warps' partial
// sums meet once, in shared memory, at the end. One block per row tile (no persistence): the
// multiply is only a few instructions per code, so there is no per-block setup to amortise.
// Act-order with up to 8 input rows (kGather): x is read through the permutation here (four
// indices and four 16-bit loads per B fragment pair) instead of a staging launch per matmul.
// Test: build-*/tests/test_cuda_qgemm (on a GPU machine). Bench: build-*/bench/bench_qgemm.
#include <type_traits>

#include "backend/cuda/device_utils.cuh"
#include "backend/cuda/launch.cuh"
#include "backend/cuda/mma.cuh"
#include "backend/cuda/nf4_levels.cuh"
#include "backend/cuda/qgemm_wgmma.cuh"
#include "backend/cuda/qgemv_tc.cuh"
#include "backend/cuda/qgemv_tc_chunk.cuh"

namespace compactor {

using namespace qtc;  // the shared chunk arithmetic (qgemv_tc_chunk.cuh)

namespace {

// Warps per block (they split the row tile's K). Tall weights at M <= 8 use 4: each warp then
// streams twice the chunks (the first batch's latency is paid once per warp) and twice the blocks
// fit an SM; short weights use 8 so that enough warps run.
constexpr int kTcWarps = 8, kTcWarpsTall = 4;
constexpr int kTcUnroll = 2;  // 64-position chunks per lane per batch (the register double buffer)
// Blocks per SM the register budget is set for (__launch_bounds__): the decode instance (M <= 8,
// groups >= 64, no gather) fits 80 registers (3 blocks; ptxas: 8 bytes of spill), the others
// would spill more there.
template <int kTiles, bool kPlain> inline constexpr int kTcMinBlocks = kTiles == 1 ? (kPlain ? 3 : 2) : kTiles == 2 ? 2 : 1;
constexpr int kTcMaxRowsM = 64;  // input rows per block (8 n8 tiles)

// Where one lane's weights live: its 16 bytes of the row tile's chunk 0, and the scale/zero rows
// of rows g and g + 8. Indices below are 32-bit (the launcher checks the sizes).
struct TcLane {
  const uint4* wt;
  const uint32_t* sz_lo;
  const uint32_t* sz_hi;
};

// Codes and scale/zero words of chunks first + u·kWarps (u < kTcUnroll): kSz words per chunk
// (rows g, g+8; kSplit: for both halves).
template <int kSz, int kWarps, int kChunk>
__device__ __forceinline__ void tc_load_batch(const QgemvTcArgs& a, const TcLane& l, int first, uint4 (&wv)[kTcUnroll],
                                              uint32_t (&szv)[kTcUnroll][kSz]) {
#pragma unroll
  for (int u = 0; u < kTcUnroll; ++u) {
    const int c = first + u * kWarps;
    const bool ok = c < a.chunks;
    wv[u] = ok ? load_codes(l.wt + c * 32) : make_uint4(0, 0, 0, 0);
#pragma unroll
    for (int hf = 0; hf < kSz / 2; ++hf) {
      const int grp = (c * kChunk + 32 * hf) >> a.group_shift;
      szv[u][2 * hf] = ok ? __ldg(l.sz_lo + grp) : 0u;
      szv[u][2 * hf + 1] = ok ? __ldg(l.sz_hi + grp) : 0u;
    }
  }
}

}  // namespace

// Block b: row tile b / m_blocks, input rows 64 · (b % m_blocks) ...; warp w multiplies chunks
// w, w + 8, w + 16, .. of the row tile. Two register buffers alternate (one in flight while the
// other is multiplied) without copies between them.
template <typename T, int kTiles, bool kGather, bool kSplit, int kWarps, bool kNF4 = false, bool kInt8 = false>
__global__ void __launch_bounds__(kWarps * 32, (kTcMinBlocks<kTiles, !kGather && !kSplit> * kTcWarps / kWarps))
    qgemv_tc_kernel(const QgemvTcArgs a) {
  static_assert(!kNF4 || (!kGather && !kSplit), "NF4 on tensor cores: blocks >= 64, no act-order");
  static_assert(!kInt8 || (!kGather && !kSplit && !kNF4), "int8 on tensor cores: no act-order");
  constexpr int kChunk = kInt8 ? kTcChunkK8 : kTcChunkK;  // positions per chunk
  __shared__ uint32_t nf4_pairs[kNF4 ? 256 : 1];
  if constexpr (kNF4) {
    for (int i = threadIdx.x; i < 256; i += blockDim.x) nf4_pairs[i] = mma::pack2<T>(kNF4LevelsDev[i & 15], kNF4LevelsDev[i >> 4]);
    __syncthreads();
  }
  constexpr int kSz = kSplit ? 4 : 2;
  __shared__ float partial[kWarps][kTiles][4][32];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int m_blocks = static_cast<int>((a.m + kTcMaxRowsM - 1) / kTcMaxRowsM);
  const TcSegment sg = a.seg[tc_segment_of(a, blockIdx.x / m_blocks)];
  const int64_t row_tile = blockIdx.x / m_blocks - sg.first_tile;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x % m_blocks) * kTcMaxRowsM;
  const int64_t row_lo = row_tile * kTcRows + g, row_hi = row_lo + 8;
  TcLane l;
  l.wt = sg.tc + row_tile * a.chunks * 32 + lane;
  l.sz_lo = sg.scale_zero + (row_lo < sg.n ? row_lo : sg.n - 1) * a.groups_padded;
  l.sz_hi = sg.scale_zero + (row_hi < sg.n ? row_hi : sg.n - 1) * a.groups_padded;
  const unsigned short* xr[kTiles];
#pragma unroll
  for (int j = 0; j < kTiles; ++j) {
    const int64_t xm = m0 + 8 * j + g;
    // Input rows past M read row 0: their D columns are never stored, and a column of the mma
    // does not mix into the others, so no predicate (and no branch) is needed on the x loads.
    xr[j] = static_cast<const unsigned short*>(a.x) + (xm < a.m ? xm : 0) * a.ldx + (kGather ? 0 : 4 * t);
  }
  constexpr int kBatch = kWarps * kTcUnroll;  // chunks per batch of the block
  uint4 w0[kTcUnroll], w1[kTcUnroll];
  uint32_t s0[kTcUnroll][kSz], s1[kTcUnroll][kSz];
  float acc[kTiles][4] = {};
  auto multiply = [&](const uint4 (&wv)[kTcUnroll], const uint32_t (&sv)[kTcUnroll][kSz], int first) {
#pragma unroll
    for (int u = 0; u < kTcUnroll; ++u) {
      const int c = first + u * kWarps;
      if (c >= a.chunks) break;  // warp-uniform
      uint2 xb[kTiles][4];
      tc_load_x<kTiles, kInt8 ? 2 : 4, kGather>(xr, a.perm, c * kChunk, t, xb);
      if constexpr (kInt8) {
        tc_chunk8<T, kTiles>(wv[u], sv[u], xb, acc);
      } else {
        tc_chunk<T, kTiles, kSplit, kNF4>(wv[u], sv[u], xb, nf4_pairs, acc);
      }
    }
  };
  tc_load_batch<kSz, kWarps, kChunk>(a, l, warp, w0, s0);
  wait_for_prior_grids();  // x and out come from the previous kernels; the weights do not
  for (int base = 0; base < a.chunks; base += 2 * kBatch) {  // the same trip count in every warp
    if (base + kBatch < a.chunks) tc_load_batch<kSz, kWarps, kChunk>(a, l, base + kBatch + warp, w1, s1);
    multiply(w0, s0, base + warp);
    if (base + kBatch >= a.chunks) break;
    if (base + 2 * kBatch < a.chunks) tc_load_batch<kSz, kWarps, kChunk>(a, l, base + 2 * kBatch + warp, w0, s0);
    multiply(w1, s1, base + kBatch + warp);
  }
#pragma unroll
  for (int j = 0; j < kTiles; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) partial[warp][j][e][lane] = acc[j][e];
  __syncthreads();
  for (int idx = threadIdx.x; idx < kTiles * 4 * 32; idx += blockDim.x)
    tc_store_output<T, kWarps, kTiles>(a, sg, row_tile, m0, partial, idx);
}

namespace {

template <typename T, int kTiles, bool kGather = false>
Status launch_tc(const QgemvTcArgs& a, cudaStream_t stream) {
  const int64_t blocks = tc_tiles(a) * ceil_div(a.m, kTcMaxRowsM);
  if (blocks > 0x7fffffff) return invalid_argument("qgemv (tensor cores): {} row tiles x input blocks is too many", blocks);
  // 32-bit chunk, group and position indices inside the kernel.
  const int64_t positions = static_cast<int64_t>(a.chunks) * (a.int8 ? kTcChunkK8 : kTcChunkK);
  if (positions > 0x3fffffff || a.groups_padded > 0x3fffffff)
    return invalid_argument("qgemv (tensor cores): K = {} positions is too large", positions);
  const unsigned grid = static_cast<unsigned>(blocks);
  auto run = [&](auto split, auto nf4, auto warps, auto int8) -> Status {
    CUDA_RETURN_IF_ERROR(
        launch_kernel(qgemv_tc_kernel<T, kTiles, kGather, decltype(split)::value, decltype(warps)::value,
                                      decltype(nf4)::value, decltype(int8)::value>,
                      grid, decltype(warps)::value * 32, 0, stream, a));
    return Status::ok();
  };
  using Yes = std::true_type;
  using No = std::false_type;
  using Normal = std::integral_constant<int, kTcWarps>;
  using Tall = std::integral_constant<int, kTcWarpsTall>;
  if (a.nf4 && (kGather || a.group_shift == 5))
    return invalid_argument("qgemv (tensor cores): NF4 needs blocks of >= 64 positions and no act-order");
  if (a.int8 && kGather) return invalid_argument("qgemv (tensor cores): int8 with act-order is not supported");
  // Tall: at least 4 row tiles per SM (H100: Llama-2 gate/up's 688, lm_head's 2000; not the 256 of
  // 4096-row weights), so that 4-warp blocks (6 per SM at 71 registers) still fill every SM.
  if constexpr (kTiles == 1 && !kGather) {
    ASSIGN_OR_RETURN(const int sms, current_sm_count());
    if (blocks >= 4 * static_cast<int64_t>(sms)) {
      if (a.int8) return run(No{}, No{}, Tall{}, Yes{});
      if (a.nf4) return run(No{}, Yes{}, Tall{}, No{});
      return a.group_shift == 5 ? run(Yes{}, No{}, Tall{}, No{}) : run(No{}, No{}, Tall{}, No{});
    }
  }
  if constexpr (!kGather) {
    if (a.int8) return run(No{}, No{}, Normal{}, Yes{});
    if (a.nf4) return run(No{}, Yes{}, Normal{}, No{});
  }
  return a.group_shift == 5 ? run(Yes{}, No{}, Normal{}, No{}) : run(No{}, No{}, Normal{}, No{});
}

}  // namespace

template <typename T>
Status qgemv_tc_launch(const View* outs, const QgemvWeight* const* ws, const View* biases, int n, const void* x,
                       int64_t ldx, int64_t m, bool gather, bool accumulate, cudaStream_t stream) {
  if (n < 1 || n > kQgemvMaxGroup) return invalid_argument("qgemv (tensor cores): {} weights in one launch", n);
  const RepackPlan& plan = ws[0]->plan;
  QgemvTcArgs a{};
  a.segments = n;
  int64_t tiles = 0;
  for (int i = 0; i < n; ++i) {
    const RepackPlan& p = ws[i]->plan;
    if (p.k_padded != plan.k_padded || p.group_shift != plan.group_shift || p.groups_padded != plan.groups_padded ||
        ws[i]->tc == nullptr)
      return invalid_argument("qgemv (tensor cores): weight {} of a group differs in K, group size or layout", i);
    if (i > 0 && biases[i].data != nullptr && biases[0].data != nullptr && biases[i].dtype != biases[0].dtype)
      return invalid_argument("qgemv (tensor cores): biases of one group have different dtypes");
    a.seg[i] = TcSegment{reinterpret_cast<const uint4*>(ws[i]->tc), ws[i]->scale_zero, outs[i].data, biases[i].data,
                         p.n, tiles};
    if (biases[i].data != nullptr) a.bias_dtype = biases[i].dtype;
    tiles += ceil_div(p.n, kTcRows);
  }
  a.x = x;
  a.perm = gather ? ws[0]->perm : nullptr;
  a.m = m;
  a.ldx = ldx;
  a.groups_padded = plan.groups_padded;
  a.chunks = static_cast<int>(tc_chunks(plan));
  a.group_shift = plan.group_shift;
  a.accumulate = accumulate;
  a.nf4 = plan.nf4;
  a.int8 = plan.bits == 8;
  for (int i = 1; i < n; ++i)
    if (ws[i]->plan.nf4 != plan.nf4 || ws[i]->plan.bits != plan.bits)
      return invalid_argument("qgemv (tensor cores): a group mixes formats");
  if (gather) {
    if (n != 1 || m > kQgemvTcGatherMaxRows || ws[0]->perm == nullptr)
      return invalid_argument("qgemv (tensor cores): gathering x needs one weight with a permutation and at most {} rows",
                              kQgemvTcGatherMaxRows);
    return launch_tc<T, 1, true>(a, stream);
  }
  if (m <= kQgemvStreamMaxRows) {
    ASSIGN_OR_RETURN(const bool streamed, qgemv_stream_launch<T>(a, stream));
    if (streamed) return Status::ok();
  }
  if (m >= kQgemmWgmmaMinRows) {
    ASSIGN_OR_RETURN(const bool done, qgemm_wgmma_launch<T>(a, stream));
    if (done) return Status::ok();
  }
  if (m <= 8) return launch_tc<T, 1>(a, stream);
  if (m <= 16) return launch_tc<T, 2>(a, stream);
  if (m <= 32) return launch_tc<T, 4>(a, stream);
  return launch_tc<T, 8>(a, stream);
}

template Status qgemv_tc_launch<__half>(const View*, const QgemvWeight* const*, const View*, int, const void*, int64_t,
                                        int64_t, bool, bool, cudaStream_t);
template Status qgemv_tc_launch<__nv_bfloat16>(const View*, const QgemvWeight* const*, const View*, int, const void*,
                                               int64_t, int64_t, bool, bool, cudaStream_t);

}  // namespace compactor
