// Streaming variant of the tensor-core GEMV for decode (M <= 16 input rows, no act-order gather):
// the same tc layout and chunk arithmetic as qgemv_tc.cu (qgemv_tc_chunk.cuh), but the codes reach
// the SM by TMA bulk copies into a ring of shared-memory stages instead of per-lane loads.
// Why: the per-lane kernel keeps at most two 16-byte loads per lane in flight and a 16-row block
// lives for a few batches only, so every block pays the DRAM latency at its start and the grid
// ends in a ragged wave (H100, llama2 shapes at M = 1: 43-53% of HBM bandwidth).
// Here two persistent blocks per SM walk row tiles b, b + grid, ...: a producer warp copies each
// tile's scale/zero rows (one contiguous [16, Gp] block, into one of two slots) and its codes in
// stages of 16 chunks (8 KB) into a 3-stage ring, and 8 consumer warps multiply: warp w takes
// chunks w and w + 8 of every stage, keeps f32 accumulators across the tile, and the warps' sums
// meet in shared memory at the tile's end. Weights do not depend on earlier kernels, so the
// producer fills the whole ring before it waits for the previous launch (launch.cuh): under
// programmatic dependent launch the first ring of every block streams while the previous kernel
// drains. The configuration was measured (bench_qgemm, w4g128, M = 1; H100): 8 consumer warps x 2
// blocks per SM beat 16 x 1 (gate/up 63% vs 51% of HBM, down 68% vs 60%, lm_head 83% vs 68%) and
// 4 x 3-4 (down 57%); 3 stages beat 2 and matched 4. The int4 zero point is applied by an extra
// mma (qgemv_tc_chunk.cuh, kZeroByMma; measured with it here, slower in the per-lane kernel).
// Barriers per ring stage: `full` (the producer's expected bytes landed) and `empty` (the 8
// consumer warps are done with it); per scale slot: `sz_empty`. Phases alternate with the stage
// counter (StageCursor), the same sequence on both sides.
// Test: build-*/tests/test_cuda_qgemm (on a GPU machine). Bench: build-*/bench/bench_qgemm.
#include <atomic>
#include <type_traits>

#include "backend/cuda/bulk_copy.cuh"
#include "backend/cuda/launch.cuh"
#include "backend/cuda/nf4_levels.cuh"
#include "backend/cuda/qgemv_tc.cuh"
#include "backend/cuda/qgemv_tc_chunk.cuh"

namespace compactor {

using namespace qtc;  // the shared chunk arithmetic (qgemv_tc_chunk.cuh)

namespace {

constexpr int kConsumerWarps = 8;
constexpr int kThreads = (kConsumerWarps + 1) * 32;  // + the producer warp
constexpr int kStageChunks = 2 * kConsumerWarps;     // two chunks per consumer warp
constexpr uint32_t kChunkBytes = 512;                // 16 rows x 64 int4 (or 32 int8) positions
constexpr int kStages = 3;
constexpr int kBlocksPerSm = 2;
constexpr int kSzSlots = 2;
// Largest scale/zero block of a tile (16 rows x Gp words) a slot holds: Llama's down projection
// (K = 11008) with groups of 32 needs 22 KB; larger ones take the per-lane kernel.
constexpr uint32_t kMaxSzSlotBytes = 24 * 1024;

std::atomic<bool>& streaming_flag() {
  static std::atomic<bool> on{true};
  return on;
}

// The runtime shape of one launch (dynamic shared memory: the ring, then the scale/zero slots).
struct StreamShape {
  int tile_stages;         // stages per row tile: ceil(chunks / kStageChunks)
  uint32_t sz_slot_bytes;  // 64 * Gp: one row tile's [16, Gp] scale/zero words
  int64_t tiles;           // row tiles of all segments
};

// Ring position of a stage counter q: stage q % kStages and the parity (q / kStages) & 1 of its
// barriers' phase, stepped without divisions.
struct StageCursor {
  int stage = 0;
  uint32_t phase = 0;
  __device__ void next() {
    if (++stage == kStages) {
      stage = 0;
      phase ^= 1;
    }
  }
};

// The producer (one thread): every stage of every row tile of this block, in order.
__device__ void produce(const QgemvTcArgs& a, const StreamShape& s, uint4* ring, uint32_t* sz_slots, uint64_t* full,
                        uint64_t* empty, uint64_t* sz_empty) {
  const uint64_t policy = bulk::evict_first_policy();
  bool waited = false;
  auto wait_prior_once = [&] {  // after the first ring's copies are out (see the file comment)
    if (!waited) wait_for_prior_grids();
    waited = true;
  };
  StageCursor cur;
  int64_t issued = 0;  // stages issued so far: the first kStages need no free slot
  int i = 0;
  for (int64_t tile = blockIdx.x; tile < s.tiles; tile += gridDim.x, ++i) {
    const TcSegment& sg = a.seg[tc_segment_of(a, tile)];
    const int64_t row_tile = tile - sg.first_tile;
    const uint4* codes = sg.tc + row_tile * a.chunks * 32;
    const int64_t rows = sg.n - row_tile * kTcRows < kTcRows ? sg.n - row_tile * kTcRows : kTcRows;
    for (int j = 0; j < s.tile_stages; ++j, ++issued, cur.next()) {
      const int slot = cur.stage;
      if (issued >= kStages) {
        wait_prior_once();
        bulk::wait(&empty[slot], cur.phase ^ 1);  // the consumers' release of the previous round
      }
      constexpr int kSc = kStageChunks;
      const int chunks = a.chunks - j * kSc < kSc ? a.chunks - j * kSc : kSc;
      const uint32_t bytes = static_cast<uint32_t>(chunks) * kChunkBytes;
      if (j == 0) {
        // The tile's scale/zero rows land with its first stage (rows past N are not copied: the
        // launcher checks that the partial block is a whole number of 16-byte units).
        const uint32_t sz_bytes = static_cast<uint32_t>(rows * a.groups_padded * 4);
        if (i >= kSzSlots) {
          wait_prior_once();
          bulk::wait(&sz_empty[i % kSzSlots], static_cast<uint32_t>((i / kSzSlots - 1) & 1));
        }
        bulk::arrive_expect_bytes(&full[slot], bytes + sz_bytes);
        bulk::copy(reinterpret_cast<char*>(sz_slots) + (i % kSzSlots) * s.sz_slot_bytes,
                   sg.scale_zero + row_tile * kTcRows * a.groups_padded, sz_bytes, &full[slot], policy);
      } else {
        bulk::arrive_expect_bytes(&full[slot], bytes);
      }
      bulk::copy(ring + static_cast<int64_t>(slot) * kSc * 32, codes + j * kSc * 32, bytes,
                 &full[slot], policy);
    }
  }
  wait_prior_once();
}

}  // namespace

// kTiles n8 tiles of input rows: 1 (M <= 8) or 2 (M <= 16).
template <typename T, int kTiles, bool kSplit, bool kNF4, bool kInt8>
__global__ void __launch_bounds__(kThreads, kBlocksPerSm) qgemv_stream_kernel(const QgemvTcArgs a, const StreamShape s) {
  constexpr int kW = kConsumerWarps, kSc = kStageChunks;
  constexpr int kChunk = kInt8 ? kTcChunkK8 : kTcChunkK;
  constexpr int kSz = kSplit ? 4 : 2;
  extern __shared__ __align__(128) uint4 ring[];  // [stages][kStageChunks][32] uint4, then the slots
  __shared__ uint64_t full[kStages], empty[kStages], sz_empty[kSzSlots];
  __shared__ float partial[2][kConsumerWarps][kTiles][4][32];
  __shared__ uint32_t nf4_pairs[kNF4 ? 256 : 1];
  uint32_t* sz_slots = reinterpret_cast<uint32_t*>(ring + kStages * kSc * 32);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  if (threadIdx.x == 0) {
    for (int i = 0; i < kStages; ++i) {
      bulk::barrier_init(&full[i], 1);
      bulk::barrier_init(&empty[i], kConsumerWarps);
    }
    for (int i = 0; i < kSzSlots; ++i) bulk::barrier_init(&sz_empty[i], kConsumerWarps);
    bulk::barrier_init_fence();
  }
  if constexpr (kNF4) {
    for (int i = threadIdx.x; i < 256; i += blockDim.x) nf4_pairs[i] = mma::pack2<T>(kNF4LevelsDev[i & 15], kNF4LevelsDev[i >> 4]);
  }
  __syncthreads();
  if (warp == kConsumerWarps) {
    if (lane == 0) produce(a, s, ring, sz_slots, full, empty, sz_empty);
    return;
  }
  wait_for_prior_grids();  // x and out come from the previous kernels
  // Input rows past M read row 0: their D columns are never stored (see qgemv_tc.cu). This warp's
  // chunks of every stage are `warp` and `warp + kW`; positions are 32-bit (the launcher of
  // qgemv_tc.cu checks K).
  const unsigned short* x_lane[kTiles];
#pragma unroll
  for (int j = 0; j < kTiles; ++j) {
    const int xm = 8 * j + g;
    x_lane[j] = static_cast<const unsigned short*>(a.x) + (xm < a.m ? xm : 0) * a.ldx + 4 * t;
  }
  // B fragments of this warp's two chunks of stage jj (positions are the same in every tile). The
  // missing chunks of a partial stage load a valid chunk's x, never multiplied.
  constexpr int kSteps = kInt8 ? 2 : 4;
  auto load_stage_x = [&](int jj, uint2 (&xb)[2][kTiles][4]) {
#pragma unroll
    for (int u = 0; u < 2; ++u) {
      const int c = min(jj * kSc + warp + u * kW, a.chunks - 1);
      tc_load_x<kTiles, kSteps, false>(x_lane, nullptr, c * kChunk, t, xb[u]);
    }
  };
  const int gp = static_cast<int>(a.groups_padded);
  StageCursor cur;
  int i = 0;
  for (int64_t tile = blockIdx.x; tile < s.tiles; tile += gridDim.x, ++i) {
    const TcSegment& sg = a.seg[tc_segment_of(a, tile)];
    const int64_t row_tile = tile - sg.first_tile;
    const uint32_t* sz_lo =
        reinterpret_cast<const uint32_t*>(reinterpret_cast<const char*>(sz_slots) + (i % kSzSlots) * s.sz_slot_bytes) +
        g * gp;
    const uint32_t* sz_hi = sz_lo + 8 * gp;
    float acc[kTiles][4] = {};
    for (int j = 0; j < s.tile_stages; ++j, cur.next()) {
      // x does not depend on the ring: its loads go out before the wait for this stage's codes
      // (ncu: the x loads' L1 latency was the largest stall, 30-38% of the cycles).
      uint2 xb[2][kTiles][4];
      load_stage_x(j, xb);
      bulk::wait(&full[cur.stage], cur.phase);
      const uint4* codes = ring + cur.stage * kSc * 32 + warp * 32 + lane;
      auto multiply = [&](int u) {
        const int c = j * kSc + warp + u * kW;
        uint32_t sz[kSz];
#pragma unroll
        for (int hf = 0; hf < kSz / 2; ++hf) {
          const int grp = (c * kChunk + 32 * hf) >> a.group_shift;
          sz[2 * hf] = sz_lo[grp];
          sz[2 * hf + 1] = sz_hi[grp];
        }
        if constexpr (kInt8) {
          tc_chunk8<T, kTiles>(codes[u * kW * 32], sz, xb[u], acc);
        } else {
          tc_chunk<T, kTiles, kSplit, kNF4, true>(codes[u * kW * 32], sz, xb[u], nf4_pairs, acc);
        }
      };
      if ((j + 1) * kSc <= a.chunks) {  // a whole stage: both chunks, free to interleave
        multiply(0);
        multiply(1);
      } else {  // the tile's partial last stage (warp-uniform branches)
        if (j * kSc + warp < a.chunks) multiply(0);
        if (j * kSc + warp + kW < a.chunks) multiply(1);
      }
      __syncwarp();
      if (lane == 0) bulk::arrive(&empty[cur.stage]);
    }
    float (&part)[kConsumerWarps][kTiles][4][32] = partial[i & 1];
#pragma unroll
    for (int j = 0; j < kTiles; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) part[warp][j][e][lane] = acc[j][e];
    __syncwarp();
    if (lane == 0) bulk::arrive(&sz_empty[i % kSzSlots]);
    bulk::named_sync(1, kConsumerWarps * 32);  // partial[i & 1] is complete; partial[(i + 1) & 1] free
    if (threadIdx.x < kTiles * 4 * 32) tc_store_output<T, kConsumerWarps, kTiles>(a, sg, row_tile, 0, part, threadIdx.x);
  }
}

void set_qgemv_streaming(bool on) { streaming_flag().store(on, std::memory_order_relaxed); }
bool qgemv_streaming_enabled() { return streaming_flag().load(std::memory_order_relaxed); }

namespace {

// Whether the launch fits the streaming kernel (else the caller launches the per-lane one).
bool stream_supported(const QgemvTcArgs& a) {
  if (!qgemv_streaming_enabled() || a.m > kQgemvStreamMaxRows || a.groups_padded * 64 > kMaxSzSlotBytes) return false;
  for (int i = 0; i < a.segments; ++i) {
    const int64_t rows = a.seg[i].n % kTcRows;  // the last tile's rows (0: whole tiles)
    if ((rows * a.groups_padded * 4) % 16 != 0) return false;
    if (reinterpret_cast<uintptr_t>(a.seg[i].scale_zero) % 16 != 0 || reinterpret_cast<uintptr_t>(a.seg[i].tc) % 16 != 0)
      return false;
  }
  return true;
}

template <typename T, int kTiles, bool kSplit, bool kNF4, bool kInt8>
Status launch_stream(const QgemvTcArgs& a, const StreamShape& s, cudaStream_t stream) {
  auto kernel = qgemv_stream_kernel<T, kTiles, kSplit, kNF4, kInt8>;
  const size_t smem = static_cast<size_t>(kStages) * kStageChunks * kChunkBytes + kSzSlots * s.sz_slot_bytes;
  CUDA_RETURN_IF_ERROR((allow_dynamic_smem<qgemv_stream_kernel<T, kTiles, kSplit, kNF4, kInt8>>(smem)));
  ASSIGN_OR_RETURN(const int sms, current_sm_count());
  // Two blocks per SM: at most 24 KB of ring + 2 x kMaxSzSlotBytes + ~10 KB static each, and
  // __launch_bounds__ caps the registers for two.
  const int64_t slots = static_cast<int64_t>(sms) * kBlocksPerSm;
  const int64_t grid = s.tiles < slots ? s.tiles : slots;
  CUDA_RETURN_IF_ERROR(launch_kernel(kernel, static_cast<unsigned>(grid), kThreads, smem, stream, a, s));
  return Status::ok();
}

}  // namespace

template <typename T>
Result<bool> qgemv_stream_launch(const QgemvTcArgs& a, cudaStream_t stream) {
  if (!stream_supported(a)) return false;
  StreamShape s{};
  s.tile_stages = static_cast<int>(ceil_div(a.chunks, kStageChunks));
  s.sz_slot_bytes = static_cast<uint32_t>(a.groups_padded * 64);
  s.tiles = tc_tiles(a);
  if (s.tiles == 0) return true;
  auto run = [&](auto tiles) -> Status {
    constexpr int kTiles = decltype(tiles)::value;
    return a.int8              ? launch_stream<T, kTiles, false, false, true>(a, s, stream)
           : a.nf4             ? launch_stream<T, kTiles, false, true, false>(a, s, stream)
           : a.group_shift == 5 ? launch_stream<T, kTiles, true, false, false>(a, s, stream)
                                : launch_stream<T, kTiles, false, false, false>(a, s, stream);
  };
  const Status st = a.m <= 8 ? run(std::integral_constant<int, 1>{}) : run(std::integral_constant<int, 2>{});
  if (!st.is_ok()) return st;
  return true;
}

template Result<bool> qgemv_stream_launch<__half>(const QgemvTcArgs&, cudaStream_t);
template Result<bool> qgemv_stream_launch<__nv_bfloat16>(const QgemvTcArgs&, cudaStream_t);

}  // namespace compactor
