// Causal GQA attention, flash-attention style on CUDA cores (f32 math).
//
// Work split. Within one (sequence b, kv head), the T·G query rows (G = H/Hkv query heads share
// the kv head; row r = t·G + g) are cut into tiles of kBlockRows; a block takes one tile and one
// key range (all keys, or one split of them). Sharing the kv head across the G heads means each
// K/V tile is loaded once for all of them, and decode (T = 1) still fills a block with G rows.
//
//   block (tile, split, kv head, b): 4 warps; warp w owns tile rows w, w+4, w+8, w+12
//   per 32-key tile: K, V -> shared memory (f32); lane j scores key j for its warp's 4 rows;
//   online softmax in the log2 domain (q pre-scaled by scale·log2 e); lane owns output dims
//   lane + 32c and accumulates p_j · V[j] with p_j broadcast by shuffle.
//
// With splits > 1 each block writes its normalised partial output and log2-sum-exp to the
// workspace, and attention_combine_kernel merges the splits (flash-decoding, Dao et al. 2023).
// Test: build-cuda/tests/test_cuda_ops --gtest_filter='*Attention*' (on a GPU machine).
#include <algorithm>
#include <cmath>

#include "backend/cuda/attention.cuh"
#include "backend/cuda/attention_decode.cuh"
#include "backend/cuda/attention_tc.cuh"
#include "backend/cuda/device_utils.cuh"
#include "backend/cuda/launch.cuh"

namespace compactor {

namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kRowsPerWarp = 4;
constexpr int kBlockRows = kWarps * kRowsPerWarp;
constexpr int kBlockKeys = 32;        // one key per lane
constexpr int kMinKeysPerSplit = 64;  // below this a split costs more in merging than it saves
// The row-tiled kernels (more than kDecodeRows query rows per kv head: prefill) merge splits in a
// separate pass over every row's partials (attention_combine_kernel), which costs more than the
// split saves unless the GPU is less than full and each split has many keys. Measured (H100,
// synthetic Llama-2-7B, bf16, one call): at 512 prompt tokens the old rule (the decode kernel's:
// fewer than two blocks per SM) chose 2 splits, and TTFT went 12.35 -> 11.53 ms without them; at
// 128 tokens 7.03 -> 6.89 ms (bench/results/NVIDIA-H100-80GB-HBM3-ncu-notes.md, "Tenth session").
constexpr int kMinKeysPerCombinedSplit = 256;
constexpr int kMaxSplits = 64;
static_assert(kMaxSplits <= kDecodeMaxSplits, "every planned split count fits the decode kernel's merge");
constexpr int kMaxHeadDim = 256;

// Shared-memory rows are padded to whole float4s; the K row stride is an odd number of float4s
// so the 8 lanes of each float4 phase hit distinct banks when lane j reads key row j.
__host__ __device__ inline int padded_dim(int head_dim) { return (head_dim + 3) / 4 * 4; }
__host__ __device__ inline int key_stride(int head_dim) { return ((padded_dim(head_dim) / 4) | 1) * 4; }

size_t smem_bytes(int head_dim) {
  const int dp = padded_dim(head_dim);
  return sizeof(float) * (static_cast<size_t>(kBlockRows) * dp + static_cast<size_t>(kBlockKeys) * key_stride(head_dim) +
                          static_cast<size_t>(kBlockKeys) * dp);
}

template <typename T>
struct AttentionArgs {
  const T* q;               // [B*T, H*Dh]
  const T* k_cache;         // [B, S_max, Hkv*Dh]
  const T* v_cache;         // [B, S_max, Hkv*Dh]
  T* out;                   // [B*T, H*Dh] (splits == 1)
  float* part_o;            // [splits, B*T*H, Dh] (splits > 1)
  float* part_lse;          // [splits, B*T*H] log2-sum-exp (splits > 1)
  const int32_t* past;      // [B]
  int tokens, heads, kv_heads, group, head_dim;
  int64_t s_max;
  int splits, keys_per_split;
  float scale_log2;         // softmax scale · log2(e)
  bool vec_kv;              // Dh % 8 == 0 and 16-byte aligned caches: K/V move in 16-byte loads
};

// q_s[r][d] = q · scale_log2 for the tile's rows, zero for rows past the end and dims >= Dh.
template <typename T>
__device__ void load_q_tile(const AttentionArgs<T>& a, float* q_s, int b, int kvh, int row0, int n_rows) {
  const int dp = padded_dim(a.head_dim);
  for (int i = threadIdx.x; i < kBlockRows * dp; i += blockDim.x) {
    const int lr = i / dp, d = i % dp, row = row0 + lr;
    float v = 0.f;
    if (row < n_rows && d < a.head_dim) {
      const int t = row / a.group, head = kvh * a.group + row % a.group;
      v = to_f32(a.q[((static_cast<int64_t>(b) * a.tokens + t) * a.heads + head) * a.head_dim + d]) * a.scale_log2;
    }
    q_s[i] = v;
  }
}

// K rows -> k_s (stride key_stride), V rows -> v_s (stride padded_dim); keys >= key_end are zero
// so that masked lanes never multiply garbage (0 · NaN would poison the sum).
template <typename T>
__device__ void load_kv_tile(const AttentionArgs<T>& a, float* k_s, float* v_s, int b, int kvh, int kb, int key_end) {
  const int dh = a.head_dim, dp = padded_dim(dh), ks = key_stride(dh);
  const int64_t base = (static_cast<int64_t>(b) * a.s_max * a.kv_heads + kvh) * dh;
  const int64_t key_step = static_cast<int64_t>(a.kv_heads) * dh;
  if (a.vec_kv) {  // 16-byte loads: 8 elements per thread per step
    const int vecs = dh / 8;
    for (int i = threadIdx.x; i < kBlockKeys * vecs; i += blockDim.x) {
      const int j = i / vecs, d = (i % vecs) * 8;
      float kf[8] = {}, vf[8] = {};
      if (kb + j < key_end) {
        const int64_t off = base + (kb + j) * key_step + d;
        const uint4 kr = *reinterpret_cast<const uint4*>(a.k_cache + off);
        const uint4 vr = *reinterpret_cast<const uint4*>(a.v_cache + off);
        const T* ke = reinterpret_cast<const T*>(&kr);
        const T* ve = reinterpret_cast<const T*>(&vr);
#pragma unroll
        for (int e = 0; e < 8; ++e) kf[e] = to_f32(ke[e]), vf[e] = to_f32(ve[e]);
      }
      float4* kd = reinterpret_cast<float4*>(k_s + j * ks + d);
      float4* vd = reinterpret_cast<float4*>(v_s + j * dp + d);
      kd[0] = make_float4(kf[0], kf[1], kf[2], kf[3]);
      kd[1] = make_float4(kf[4], kf[5], kf[6], kf[7]);
      vd[0] = make_float4(vf[0], vf[1], vf[2], vf[3]);
      vd[1] = make_float4(vf[4], vf[5], vf[6], vf[7]);
    }
    return;
  }
  for (int i = threadIdx.x; i < kBlockKeys * dp; i += blockDim.x) {
    const int j = i / dp, d = i % dp;
    float kf = 0.f, vf = 0.f;
    if (kb + j < key_end && d < dh) {
      const int64_t off = base + (kb + j) * key_step + d;
      kf = to_f32(a.k_cache[off]);
      vf = to_f32(a.v_cache[off]);
    }
    k_s[j * ks + d] = kf;
    v_s[j * dp + d] = vf;
  }
}

// Per-warp state of its kRowsPerWarp query rows; lane owns output dims lane + 32c.
template <int kChunks>
struct RowState {
  float m[kRowsPerWarp];           // running max (log2 domain), warp-uniform
  float l[kRowsPerWarp];           // this lane's share of the running sum of exp2
  float o[kRowsPerWarp][kChunks];  // unnormalised output
  int qpos[kRowsPerWarp];          // last key position the row may see; -1 for padding rows
  int n_valid;                     // rows 0 .. n_valid-1 are real (a prefix); the rest is padding
};

// Scores one 32-key tile (lane j: key kb + j), updates max/sum, rescales o and returns p in pr.
template <int kChunks>
__device__ void softmax_tile(RowState<kChunks>& st, float (&pr)[kRowsPerWarp], const float* q_s, const float* k_s,
                             int dp, int ks, int kb, int key_end) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float s[kRowsPerWarp] = {};
  const float* krow = k_s + lane * ks;
  for (int d = 0; d < dp; d += 4) {
    const float4 kv = *reinterpret_cast<const float4*>(krow + d);
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      if (r >= st.n_valid) break;  // warp-uniform: decode tiles are mostly padding rows
      const float4 qv = *reinterpret_cast<const float4*>(q_s + (r * kWarps + warp) * dp + d);
      s[r] += qv.x * kv.x + qv.y * kv.y + qv.z * kv.z + qv.w * kv.w;
    }
  }
  const int key = kb + lane;
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const float sr = (key < key_end && key <= st.qpos[r]) ? s[r] : -INFINITY;
    const float m_new = fmaxf(st.m[r], warp_max(sr));
    float alpha = 1.f, p = 0.f;
    if (m_new != -INFINITY) {  // warp-uniform; all-masked rows keep their state
      alpha = exp2f(st.m[r] - m_new);
      p = exp2f(sr - m_new);
    }
    st.m[r] = m_new;
    st.l[r] = st.l[r] * alpha + p;
#pragma unroll
    for (int c = 0; c < kChunks; ++c) st.o[r][c] *= alpha;
    pr[r] = p;
  }
}

// o[r] += Σ_j p_j · V[j] over the first n_keys keys of the tile.
template <int kChunks>
__device__ void accumulate_pv(RowState<kChunks>& st, const float (&pr)[kRowsPerWarp], const float* v_s, int dp,
                              int n_keys) {
  const int lane = threadIdx.x & 31;
#pragma unroll 4
  for (int j = 0; j < n_keys; ++j) {
    float vv[kChunks];
#pragma unroll
    for (int c = 0; c < kChunks; ++c) vv[c] = lane + 32 * c < dp ? v_s[j * dp + lane + 32 * c] : 0.f;
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      if (r >= st.n_valid) break;
      const float pj = __shfl_sync(0xffffffffu, pr[r], j);
#pragma unroll
      for (int c = 0; c < kChunks; ++c) st.o[r][c] += pj * vv[c];
    }
  }
}

// Writes each valid row: the final output (one split) or the partial output and its lse.
template <typename T, int kChunks>
__device__ void write_rows(const AttentionArgs<T>& a, const RowState<kChunks>& st, int b, int kvh, int row0,
                           int n_rows, int split) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t total_rows = static_cast<int64_t>(gridDim.z) * a.tokens * a.heads;
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const float lsum = warp_sum(st.l[r]);
    const int row = row0 + r * kWarps + warp;
    if (row >= n_rows) continue;
    const int t = row / a.group, head = kvh * a.group + row % a.group;
    const int64_t grow = (static_cast<int64_t>(b) * a.tokens + t) * a.heads + head;
    const float inv = lsum > 0.f ? 1.f / lsum : 0.f;
    if (a.splits == 1) {
#pragma unroll
      for (int c = 0; c < kChunks; ++c)
        if (lane + 32 * c < a.head_dim) a.out[grow * a.head_dim + lane + 32 * c] = from_f32<T>(st.o[r][c] * inv);
      continue;
    }
    const int64_t prow = split * total_rows + grow;
#pragma unroll
    for (int c = 0; c < kChunks; ++c)
      if (lane + 32 * c < a.head_dim) a.part_o[prow * a.head_dim + lane + 32 * c] = st.o[r][c] * inv;
    if (lane == 0) a.part_lse[prow] = lsum > 0.f ? st.m[r] + log2f(lsum) : -INFINITY;
  }
}

}  // namespace

template <typename T, int kMaxDh>
__global__ void __launch_bounds__(kThreads) attention_kernel(const AttentionArgs<T> a) {
  wait_for_prior_grids();
  constexpr int kChunks = kMaxDh / 32;
  extern __shared__ float4 smem4[];
  const int dp = padded_dim(a.head_dim), ks = key_stride(a.head_dim);
  float* q_s = reinterpret_cast<float*>(smem4);
  float* k_s = q_s + kBlockRows * dp;
  float* v_s = k_s + kBlockKeys * ks;

  const int row_tiles = gridDim.x / a.splits;
  const int tile = blockIdx.x % row_tiles, split = blockIdx.x / row_tiles;
  const int kvh = blockIdx.y, b = blockIdx.z, warp = threadIdx.x >> 5;
  const int past = a.past[b];
  const int n_rows = a.tokens * a.group, row0 = tile * kBlockRows;
  const int last_row = min(row0 + kBlockRows, n_rows) - 1;
  const int key_begin = split * a.keys_per_split;
  const int key_end = min(past + last_row / a.group + 1, key_begin + a.keys_per_split);

  RowState<kChunks> st;
  st.n_valid = 0;
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int row = row0 + r * kWarps + warp;
    st.qpos[r] = row < n_rows ? past + row / a.group : -1;
    st.n_valid += row < n_rows ? 1 : 0;
    st.m[r] = -INFINITY;
    st.l[r] = 0.f;
#pragma unroll
    for (int c = 0; c < kChunks; ++c) st.o[r][c] = 0.f;
  }
  load_q_tile(a, q_s, b, kvh, row0, n_rows);
  for (int kb = key_begin; kb < key_end; kb += kBlockKeys) {
    __syncthreads();  // q_s written / previous tile consumed
    load_kv_tile(a, k_s, v_s, b, kvh, kb, key_end);
    __syncthreads();
    if (st.n_valid == 0) continue;  // this warp only helps load (its rows are all padding)
    float pr[kRowsPerWarp];
    softmax_tile(st, pr, q_s, k_s, dp, ks, kb, key_end);
    accumulate_pv(st, pr, v_s, dp, min(kBlockKeys, key_end - kb));
  }
  write_rows(a, st, b, kvh, row0, n_rows, split);
}

// One block per (b, t, head) row: out = Σ_s 2^(lse_s - M) o_s / Σ_s 2^(lse_s - M).
template <typename T>
__global__ void attention_combine_kernel(T* __restrict__ out,                // [B*T*H, Dh]
                                         const float* __restrict__ part_o,    // [splits, B*T*H, Dh]
                                         const float* __restrict__ part_lse,  // [splits, B*T*H]
                                         int64_t total_rows, int splits, int head_dim) {
  wait_for_prior_grids();
  const int64_t row = blockIdx.x;
  float mx = -INFINITY;
  for (int s = 0; s < splits; ++s) mx = fmaxf(mx, part_lse[s * total_rows + row]);
  float wsum = 0.f;
  for (int s = 0; s < splits; ++s) {
    const float lse = part_lse[s * total_rows + row];
    if (lse != -INFINITY) wsum += exp2f(lse - mx);
  }
  for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float acc = 0.f;
    for (int s = 0; s < splits; ++s) {
      const float lse = part_lse[s * total_rows + row];
      if (lse != -INFINITY) acc += exp2f(lse - mx) * part_o[(s * total_rows + row) * head_dim + d];
    }
    out[row * head_dim + d] = from_f32<T>(wsum > 0.f ? acc / wsum : 0.f);
  }
}

AttentionPlan plan_attention(const AttentionParams& p, const DeviceBatch& batch, int sm_count, int force_splits) {
  AttentionPlan plan;
  const int group = p.kv_heads > 0 ? std::max(1, p.heads / p.kv_heads) : 1;
  // The tensor-core kernel (head dims 64/128) takes 64 rows and 64-key tiles per block.
  const bool tc = p.head_dim == 64 || p.head_dim == 128;
  const int tile_rows = tc ? kTcRows : kBlockRows, tile_keys = tc ? kTcKeys : kBlockKeys;
  const int64_t blocks = ceil_div(static_cast<int64_t>(batch.tokens) * group, tile_rows) * p.kv_heads * batch.batch;
  const int max_len = batch.max_keys > 0 ? batch.max_keys : batch.max_past() + batch.tokens;
  int64_t splits = 1;
  if (force_splits > 0) {
    splits = force_splits;
  } else {
    // More query rows per kv head than the decode kernel takes: splits go through the combine pass.
    const bool combined = static_cast<int64_t>(batch.tokens) * group > kDecodeRows;
    const int64_t fill = combined ? sm_count : 2LL * sm_count;
    const int min_keys = combined ? kMinKeysPerCombinedSplit : kMinKeysPerSplit;
    if (blocks > 0 && blocks < fill)
      splits = std::min<int64_t>({ceil_div(2LL * sm_count, blocks), ceil_div(max_len, min_keys), kMaxSplits});
  }
  splits = std::max<int64_t>(1, std::min<int64_t>(splits, std::max(1, max_len)));
  plan.keys_per_split = static_cast<int>(ceil_div(ceil_div(max_len, splits), tile_keys) * tile_keys);
  plan.splits = static_cast<int>(ceil_div(max_len, std::max(1, plan.keys_per_split)));
  if (plan.splits < 1) plan.splits = 1;
  if (plan.splits > 1) {
    plan.workspace_floats = static_cast<size_t>(plan.splits) * batch.batch * batch.tokens * p.heads * (p.head_dim + 1);
    plan.counter_ints = static_cast<size_t>(batch.batch) * p.kv_heads;
  }
  return plan;
}

namespace {

Status check_attention(View out, View q, View k_cache, View v_cache, const AttentionParams& p,
                       const DeviceBatch& batch) {
  RETURN_IF_ERROR(expect_act("attention", "q", q));
  RETURN_IF_ERROR(expect_cuda("attention", "out", out));
  RETURN_IF_ERROR(expect_cuda("attention", "k_cache", k_cache));
  RETURN_IF_ERROR(expect_cuda("attention", "v_cache", v_cache));
  if (p.heads <= 0 || p.kv_heads <= 0 || p.heads % p.kv_heads != 0 || p.head_dim <= 0 || p.head_dim > kMaxHeadDim)
    return unsupported("attention: H={} Hkv={} Dh={}; need H % Hkv == 0 and 0 < Dh <= {}", p.heads, p.kv_heads,
                       p.head_dim, kMaxHeadDim);
  if (!std::isfinite(p.scale)) return invalid_argument("attention: scale {} is not finite", p.scale);
  if (batch.batch <= 0 || batch.batch > 65535 || p.kv_heads > 65535)
    return invalid_argument("attention: B={} and Hkv={} must be in [1, 65535]", batch.batch, p.kv_heads);
  const int64_t rows = static_cast<int64_t>(batch.batch) * batch.tokens;
  RETURN_IF_ERROR(expect_shape2("attention", "q", q, rows, static_cast<int64_t>(p.heads) * p.head_dim));
  RETURN_IF_ERROR(expect_same("attention", "out", out, q));
  RETURN_IF_ERROR(expect_same("attention", "v_cache", v_cache, k_cache));
  if (k_cache.dtype != q.dtype)
    return unsupported("attention: cache dtype {} differs from q dtype {}", dtype_name(k_cache.dtype), dtype_name(q.dtype));
  if (k_cache.shape.ndim != 3 || k_cache.shape[0] != batch.batch ||
      k_cache.shape[2] != static_cast<int64_t>(p.kv_heads) * p.head_dim)
    return invalid_argument("attention: cache {} does not match [B={}, S_max, Hkv*Dh={}]", k_cache.shape.str(),
                            batch.batch, static_cast<int64_t>(p.kv_heads) * p.head_dim);
  for (int b = 0; b < batch.batch; ++b)
    if (batch.past_host[b] < 0 || batch.past_host[b] + batch.tokens > k_cache.shape[1])
      return invalid_argument("attention: sequence {} needs {} cached keys but the cache holds {}", b,
                              batch.past_host[b] + batch.tokens, k_cache.shape[1]);
  if (static_cast<int64_t>(batch.tokens) * (p.heads / p.kv_heads) > (1LL << 30))
    return invalid_argument("attention: T·G = {} query rows per kv head is too many", batch.tokens * (p.heads / p.kv_heads));
  return Status::ok();
}

template <typename T, int kMaxDh>
Status launch_attention(const AttentionArgs<T>& a, int batch, cudaStream_t stream) {
  const size_t smem = smem_bytes(a.head_dim);
  CUDA_RETURN_IF_ERROR((allow_dynamic_smem<attention_kernel<T, kMaxDh>>(smem)));
  const int64_t row_tiles = ceil_div(static_cast<int64_t>(a.tokens) * a.group, kBlockRows);
  const int64_t gx = row_tiles * a.splits;
  if (gx > 0x7fffffff) return invalid_argument("attention: {} row tiles x {} splits exceed one grid", row_tiles, a.splits);
  const dim3 grid(static_cast<unsigned>(gx), a.kv_heads, batch);
  CUDA_RETURN_IF_ERROR(launch_kernel(attention_kernel<T, kMaxDh>, grid, kThreads, smem, stream, a));
  return Status::ok();
}

template <typename T>
Status launch_combine(const AttentionArgs<T>& a, int batch, cudaStream_t stream) {
  const int64_t total_rows = static_cast<int64_t>(batch) * a.tokens * a.heads;
  const int threads = a.head_dim > 64 ? 128 : (a.head_dim > 32 ? 64 : 32);
  CUDA_RETURN_IF_ERROR(launch_kernel(attention_combine_kernel<T>, static_cast<unsigned>(total_rows), threads, 0, stream,
                                     a.out, a.part_o, a.part_lse, total_rows, a.splits, a.head_dim));
  return Status::ok();
}

}  // namespace

Status attention_cuda(View out, View q, View k_cache, View v_cache, const AttentionParams& p,
                      const DeviceBatch& batch, const AttentionPlan& plan, float* workspace, int* counters,
                      cudaStream_t stream, AttentionVariant variant) {
  RETURN_IF_ERROR(check_attention(out, q, k_cache, v_cache, p, batch));
  if (batch.tokens == 0) return Status::ok();
  if (plan.splits < 1 || plan.keys_per_split < 1 || (plan.splits > 1 && workspace == nullptr))
    return invalid_argument("attention: bad plan ({} splits of {} keys, workspace {})", plan.splits,
                            plan.keys_per_split, workspace != nullptr ? "set" : "missing");
  if (static_cast<int64_t>(plan.splits) * plan.keys_per_split < std::max(batch.max_keys, batch.max_past() + batch.tokens))
    return invalid_argument("attention: plan covers {} keys, fewer than the {} needed",
                            static_cast<int64_t>(plan.splits) * plan.keys_per_split, batch.max_past() + batch.tokens);
  const int64_t total_rows = static_cast<int64_t>(batch.batch) * batch.tokens * p.heads;
  const bool vec_kv = p.head_dim % 8 == 0 && reinterpret_cast<uintptr_t>(k_cache.data) % 16 == 0 &&
                      reinterpret_cast<uintptr_t>(v_cache.data) % 16 == 0;
  return dispatch_act(q.dtype, "attention", [&](auto tag) {
    using T = decltype(tag);
    AttentionArgs<T> a{q.as<T>(), k_cache.as<T>(), v_cache.as<T>(), out.as<T>(),
                       workspace, workspace != nullptr ? workspace + total_rows * p.head_dim * plan.splits : nullptr,
                       batch.past_dev, batch.tokens, p.heads, p.kv_heads, p.heads / p.kv_heads, p.head_dim,
                       k_cache.shape[1], plan.splits, plan.keys_per_split,
                       p.scale * 1.4426950408889634f, vec_kv};
    // The decode kernel where the keys are split (few (sequence, kv head) pairs: its keys-as-M
    // layout and fused merge won, H100 B=1: 9.8 vs 11.2 us per layer); with one block per pair
    // (large batches) the 16-rows-per-warp kernel streams as fast or faster (B=16: 64.6 vs 66.4 us).
    if (variant == AttentionVariant::kAuto && counters != nullptr &&
        attention_decode_supported(a.tokens * a.group, p.head_dim, plan.splits, plan.keys_per_split, q.data, out.data,
                                   k_cache.data, v_cache.data)) {
      const AttentionDecodeArgs d{a.q,         a.k_cache, a.v_cache, a.out,     a.part_o,   a.part_lse,
                                  counters,    a.past,    batch.batch, a.tokens, a.heads,    a.kv_heads,
                                  a.group,     a.head_dim, a.s_max,  a.splits,  a.keys_per_split, a.scale_log2};
      return attention_decode_cuda(d, q.dtype, stream);  // merges its splits itself
    }
    const bool tc = variant != AttentionVariant::kCudaCores &&
                    attention_tc_supported(p.head_dim, q.data, out.data, k_cache.data, v_cache.data);
    const AttentionTcArgs tc_args{a.q,        a.k_cache,   a.v_cache, a.out,   a.part_o,         a.part_lse,
                                  a.past,     batch.batch, a.tokens,  a.heads, a.kv_heads,       a.group,
                                  a.head_dim, a.s_max,     a.splits,  a.keys_per_split, a.scale_log2};
    Status st = tc                    ? attention_tc_cuda(tc_args, q.dtype, stream)
                : p.head_dim <= 64    ? launch_attention<T, 64>(a, batch.batch, stream)
                : p.head_dim <= 128   ? launch_attention<T, 128>(a, batch.batch, stream)
                                      : launch_attention<T, kMaxHeadDim>(a, batch.batch, stream);
    if (!st.is_ok() || plan.splits == 1) return st;
    return launch_combine(a, batch.batch, stream);
  });
}

}  // namespace compactor
