// Decode attention on mma.sync with the keys on the M side (see attention_decode.cuh).
//
// Fragments of mma.m16n8k16 (g = lane / 4, t = lane % 4; the layouts of attention_tc.cu):
//   Sᵀ = K·qᵀ:  A = 16 keys × 16 dims of the K tile (ldmatrix, as stored), B = qᵀ (b0 = dims 2t..2t+1
//               of query row g, b1 = dims 2t+8..), C: c0,c1 = (key g, rows 2t, 2t+1), c2,c3 = key g+8.
//   Oᵀ += Vᵀ·Pᵀ: A = 16 dims × 16 keys of the V tile (ldmatrix.trans), B = Pᵀ (keys 2t..2t+1 of row
//               g, from the P rows in shared memory), C: c0,c1 = (dim g, rows 2t, 2t+1), c2,c3 = dim g+8.
// Per 64-key tile: warp w scores keys 16w..16w+15 for all 8 rows into shared memory; warp w then
// runs the online softmax of rows 2w, 2w+1 over the tile (writing P and the rescale factor); and
// warp w accumulates output dims [w·Dh/4, (w+1)·Dh/4) over the tile's 64 keys.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "backend/cuda/attention_decode.cuh"
#include "backend/cuda/attention_tc.cuh"
#include "backend/cuda/device_utils.cuh"
#include "backend/cuda/launch.cuh"
#include "backend/cuda/mma.cuh"

namespace compactor {

namespace {

using namespace mma;  // NOLINT: the PTX wrappers of mma.cuh

constexpr int kWarps = 4, kThreads = kWarps * 32;
static_assert(kDecodeRows == 2 * kWarps && kDecodeKeys == 16 * kWarps, "one warp per 16 keys and per 2 rows");

template <typename T, int kDh>
struct DecodeSmem {
  static constexpr int kStride = kDh + 8;  // 16-byte pad: the 8 rows of an ldmatrix hit distinct banks
  T k[2][kDecodeKeys][kStride];
  T v[2][kDecodeKeys][kStride];
  union {
    float s[kDecodeRows][kDecodeKeys + 4];     // the tile's scores (log2 domain), -inf where masked
    float w[kDecodeRows][kDecodeMaxSplits];    // combine: each split's weight per row
  };
  T p[kDecodeRows][kDecodeKeys + 8];  // probabilities: the PV mma's B operand
  float m[kDecodeRows], l[kDecodeRows], alpha[kDecodeRows];
  int last;
};

struct DecodeBlock {
  int split, kvh, b, past, rows, key_begin, key_end, n_tiles;
};

__device__ __forceinline__ DecodeBlock decode_block(const AttentionDecodeArgs& a) {
  DecodeBlock blk;
  blk.split = blockIdx.x;
  blk.kvh = blockIdx.y;
  blk.b = blockIdx.z;
  // Host-uploaded (or advanced by a kernel of an earlier step): settled before this launch.
  blk.past = a.past[blk.b];
  blk.rows = a.tokens * a.group;
  blk.key_begin = blk.split * a.keys_per_split;
  blk.key_end = min(blk.past + a.tokens, blk.key_begin + a.keys_per_split);
  blk.n_tiles = blk.key_end > blk.key_begin ? (blk.key_end - blk.key_begin + kDecodeKeys - 1) / kDecodeKeys : 0;
  return blk;
}

// Query row r (token r / G, head kvh·G + r % G) -> its row of q/out in units of Dh.
__device__ __forceinline__ int64_t query_row(const AttentionDecodeArgs& a, const DecodeBlock& blk, int r) {
  return (static_cast<int64_t>(blk.b) * a.tokens + r / a.group) * a.heads + blk.kvh * a.group + r % a.group;
}

// Copies the keys kb + j in [lo, hi) of the tile starting at kb into k_s/v_s; with zero_tail, rows
// at or past key_end are zero-filled (P is 0 there, and 0 · garbage could be NaN).
template <typename T, int kDh>
__device__ __forceinline__ void load_kv_rows(const AttentionDecodeArgs& a, const DecodeBlock& blk, int kb, int lo,
                                             int hi, bool zero_tail, T (*k_s)[kDh + 8], T (*v_s)[kDh + 8]) {
  constexpr int kVecs = kDh / 8;
  const T* kc = static_cast<const T*>(a.k_cache);
  const T* vc = static_cast<const T*>(a.v_cache);
  const int64_t base = (static_cast<int64_t>(blk.b) * a.s_max * a.kv_heads + blk.kvh) * kDh;
  const int64_t key_step = static_cast<int64_t>(a.kv_heads) * kDh;
  for (int i = threadIdx.x; i < kDecodeKeys * kVecs; i += kThreads) {
    const int j = i / kVecs, c = (i % kVecs) * 8, key = kb + j;
    const bool copy = key >= lo && key < hi;
    if (!copy && !(zero_tail && key >= blk.key_end)) continue;
    const int64_t off = base + key * key_step + c;
    cp_async16(&k_s[j][c], copy ? kc + off : kc, copy);
    cp_async16(&v_s[j][c], copy ? vc + off : vc, copy);
  }
}

// Scores of the warp's 16 keys of the tile at kb for the block's rows, masked, into s.
template <typename T, int kDh>
__device__ __forceinline__ void score_keys(const AttentionDecodeArgs& a, const DecodeBlock& blk,
                                           const uint32_t (&qf)[kDh / 16][2], const T (*k_s)[kDh + 8], int kb,
                                           float (*s)[kDecodeKeys + 4]) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  float acc[2][4] = {};  // even and odd dim steps: two independent mma chains
#pragma unroll
  for (int ks = 0; ks < kDh / 16; ++ks) {
    uint32_t kf[4];
    ldmatrix_x4(kf, &k_s[16 * warp + (lane & 7) + ((lane >> 3) & 1) * 8][16 * ks + (lane >> 4) * 8]);
    mma16816<T>(acc[ks & 1], kf, qf[ks][0], qf[ks][1]);
  }
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    const int j = 16 * warp + g + 8 * (e >> 1), key = kb + j, row = 2 * t + (e & 1);
    const bool visible = row < blk.rows && key < blk.key_end && key <= blk.past + row / a.group;
    s[row][j] = visible ? (acc[0][e] + acc[1][e]) * a.scale_log2 : -INFINITY;
  }
}

// Online softmax of rows 2w, 2w+1 over the tile: P (as T), the running max/sum, and alpha, the
// factor that rescales the output accumulated so far.
template <typename T, int kDh>
__device__ __forceinline__ void softmax_rows(DecodeSmem<T, kDh>& sm) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    const int row = 2 * warp + rr;
    const float x0 = sm.s[row][lane], x1 = sm.s[row][lane + 32];
    const float m_old = sm.m[row], m_new = fmaxf(m_old, warp_max(fmaxf(x0, x1)));
    const float p0 = m_new == -INFINITY ? 0.f : exp2f(x0 - m_new);
    const float p1 = m_new == -INFINITY ? 0.f : exp2f(x1 - m_new);
    const float sum = warp_sum(p0 + p1);
    sm.p[row][lane] = from_f32<T>(p0);
    sm.p[row][lane + 32] = from_f32<T>(p1);
    if (lane == 0) {
      const float alpha = m_new == -INFINITY ? 1.f : exp2f(m_old - m_new);
      sm.alpha[row] = alpha;
      sm.l[row] = sm.l[row] * alpha + sum;
      sm.m[row] = m_new;
    }
  }
}

// o (dims [w·Dh/4, (w+1)·Dh/4) × 8 rows) = alpha · o + Vᵀ·Pᵀ over the tile's keys.
template <typename T, int kDh>
__device__ __forceinline__ void accumulate_pv(const DecodeSmem<T, kDh>& sm, const T (*v_s)[kDh + 8],
                                              float (&o)[kDh / 64][4]) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const float al0 = sm.alpha[2 * t], al1 = sm.alpha[2 * t + 1];
#pragma unroll
  for (int mt = 0; mt < kDh / 64; ++mt) {
    o[mt][0] *= al0;
    o[mt][1] *= al1;
    o[mt][2] *= al0;
    o[mt][3] *= al1;
  }
#pragma unroll
  for (int kk = 0; kk < kDecodeKeys / 16; ++kk) {
    const uint32_t b0 = *reinterpret_cast<const uint32_t*>(&sm.p[g][16 * kk + 2 * t]);
    const uint32_t b1 = *reinterpret_cast<const uint32_t*>(&sm.p[g][16 * kk + 8 + 2 * t]);
#pragma unroll
    for (int mt = 0; mt < kDh / 64; ++mt) {
      const int d0 = warp * (kDh / 4) + 16 * mt;
      uint32_t vf[4];
      ldmatrix_x4_trans(vf, &v_s[16 * kk + (lane & 7) + (lane >> 4) * 8][d0 + ((lane >> 3) & 1) * 8]);
      mma16816<T>(o[mt], vf, b0, b1);
    }
  }
}

// The last block of (sequence, kv head) to finish: out = Σ_s 2^(lse_s - M) o_s / Σ_s 2^(lse_s - M).
// Partials are read through L2 (__ldcg: other blocks wrote them during this launch) as float4s,
// kMergeGroups threads per output vector taking every kMergeGroups-th split, each gathering up to
// kMergeLoads loads before using any: at decode sizes the merge costs about one L2 round trip.
// The groups' sums meet in shared memory (the consumed K tile) in a fixed order: deterministic.
constexpr int kMergeGroups = 4, kMergeLoads = 4;

template <typename T, int kDh>
__device__ void combine_splits(const AttentionDecodeArgs& a, const DecodeBlock& blk, DecodeSmem<T, kDh>& sm) {
  constexpr int kVecs = kDh / 4;
  static_assert(sizeof(sm.k[0]) >= sizeof(float4) * kMergeGroups * kDecodeRows * kVecs, "merge buffer");
  const int64_t total_rows = static_cast<int64_t>(a.batch) * a.tokens * a.heads;
  for (int i = threadIdx.x; i < blk.rows * a.splits; i += kThreads) {
    const int r = i / a.splits, s = i % a.splits;
    sm.w[r][s] = __ldcg(a.part_lse + s * total_rows + query_row(a, blk, r));
  }
  __syncthreads();
  if (threadIdx.x < blk.rows) {
    float* w = sm.w[threadIdx.x];
    float mx = -INFINITY, sum = 0.f;
    for (int s = 0; s < a.splits; ++s) mx = fmaxf(mx, w[s]);
    for (int s = 0; s < a.splits; ++s) {
      w[s] = w[s] == -INFINITY ? 0.f : exp2f(w[s] - mx);
      sum += w[s];
    }
    const float inv = sum > 0.f ? 1.f / sum : 0.f;
    for (int s = 0; s < a.splits; ++s) w[s] *= inv;
  }
  __syncthreads();
  float4* part = reinterpret_cast<float4*>(&sm.k[0][0][0]);  // [kMergeGroups][rows · kVecs]
  const int items = blk.rows * kVecs;
  const int64_t split_stride = total_rows * kVecs;  // float4s from one split's partials to the next
  for (int slot = threadIdx.x; slot < kMergeGroups * items; slot += kThreads) {
    const int grp = slot / items, it = slot % items, r = it / kVecs;
    const float4* src = reinterpret_cast<const float4*>(a.part_o) + query_row(a, blk, r) * kVecs + it % kVecs;
    float4 sum = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int s0 = grp; s0 < a.splits; s0 += kMergeGroups * kMergeLoads) {
      float4 v[kMergeLoads];
      float w[kMergeLoads];
#pragma unroll
      for (int u = 0; u < kMergeLoads; ++u) {
        const int s = s0 + u * kMergeGroups;
        w[u] = s < a.splits ? sm.w[r][s] : 0.f;
        v[u] = w[u] != 0.f ? __ldcg(src + s * split_stride) : make_float4(0.f, 0.f, 0.f, 0.f);
      }
#pragma unroll
      for (int u = 0; u < kMergeLoads; ++u) {
        sum.x = fmaf(w[u], v[u].x, sum.x);
        sum.y = fmaf(w[u], v[u].y, sum.y);
        sum.z = fmaf(w[u], v[u].z, sum.z);
        sum.w = fmaf(w[u], v[u].w, sum.w);
      }
    }
    part[grp * items + it] = sum;
  }
  __syncthreads();
  T* out = static_cast<T*>(a.out);
  for (int it = threadIdx.x; it < items; it += kThreads) {
    float4 v = part[it];
#pragma unroll
    for (int grp = 1; grp < kMergeGroups; ++grp) {
      const float4 p = part[grp * items + it];
      v = make_float4(v.x + p.x, v.y + p.y, v.z + p.z, v.w + p.w);
    }
    *reinterpret_cast<uint2*>(out + query_row(a, blk, it / kVecs) * kDh + 4 * (it % kVecs)) =
        make_uint2(pack2<T>(v.x, v.y), pack2<T>(v.z, v.w));
  }
  if (threadIdx.x == 0) a.done[blk.b * a.kv_heads + blk.kvh] = 0;  // ready for the next launch
}

// Writes the split's normalised partial and log2-sum-exp of the block's rows, and then, in the
// last block of (sequence, kv head) to finish, the merged output.
template <typename T, int kDh>
__device__ __forceinline__ void finish(const AttentionDecodeArgs& a, const DecodeBlock& blk, DecodeSmem<T, kDh>& sm,
                                       const float (&o)[kDh / 64][4]) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int64_t total_rows = static_cast<int64_t>(a.batch) * a.tokens * a.heads;
#pragma unroll
  for (int mt = 0; mt < kDh / 64; ++mt)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int row = 2 * t + (e & 1), dim = warp * (kDh / 4) + 16 * mt + g + 8 * (e >> 1);
      if (row >= blk.rows) continue;
      const float l = sm.l[row], v = l > 0.f ? o[mt][e] / l : 0.f;
      a.part_o[(blk.split * total_rows + query_row(a, blk, row)) * kDh + dim] = v;
    }
  if (threadIdx.x < blk.rows) {
    const float l = sm.l[threadIdx.x];
    a.part_lse[blk.split * total_rows + query_row(a, blk, threadIdx.x)] = l > 0.f ? sm.m[threadIdx.x] + log2f(l) : -INFINITY;
  }
  __threadfence();  // this block's partials are visible device-wide before it is counted
  __syncthreads();
  if (threadIdx.x == 0) sm.last = atomicAdd(&a.done[blk.b * a.kv_heads + blk.kvh], 1) == a.splits - 1;
  __syncthreads();
  if (!sm.last) return;
  __threadfence();
  combine_splits<T, kDh>(a, blk, sm);
}

}  // namespace

template <typename T, int kDh>
__global__ void __launch_bounds__(kThreads) attention_decode_kernel(const AttentionDecodeArgs a) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  auto& sm = *reinterpret_cast<DecodeSmem<T, kDh>*>(smem_raw);
  const DecodeBlock blk = decode_block(a);
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  // Keys below `past` were stored by earlier steps: fetch them while the previous kernel (which
  // appends this step's keys) finishes; the rest of the tile after the wait.
  if (blk.n_tiles > 0)
    load_kv_rows<T, kDh>(a, blk, blk.key_begin, blk.key_begin, min(blk.key_end, blk.past), true, sm.k[0], sm.v[0]);
  wait_for_prior_grids();
  if (blk.n_tiles > 0)
    load_kv_rows<T, kDh>(a, blk, blk.key_begin, max(blk.key_begin, blk.past), blk.key_end, false, sm.k[0], sm.v[0]);
  cp_async_commit();
  if (threadIdx.x < kDecodeRows) {
    sm.m[threadIdx.x] = -INFINITY;
    sm.l[threadIdx.x] = 0.f;
  }
  uint32_t qf[kDh / 16][2] = {};  // qᵀ as B fragments: query row g (zero past the block's rows)
  if (g < blk.rows) {
    const T* qr = static_cast<const T*>(a.q) + query_row(a, blk, g) * kDh + 2 * t;
#pragma unroll
    for (int ks = 0; ks < kDh / 16; ++ks) {
      qf[ks][0] = *reinterpret_cast<const uint32_t*>(qr + 16 * ks);
      qf[ks][1] = *reinterpret_cast<const uint32_t*>(qr + 16 * ks + 8);
    }
  }
  float o[kDh / 64][4] = {};
  for (int i = 0; i < blk.n_tiles; ++i) {
    const int buf = i & 1, kb = blk.key_begin + i * kDecodeKeys;
    if (i + 1 < blk.n_tiles) {  // prefetch the next tile into the other buffer
      load_kv_rows<T, kDh>(a, blk, kb + kDecodeKeys, kb + kDecodeKeys, blk.key_end, true, sm.k[buf ^ 1], sm.v[buf ^ 1]);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    score_keys<T, kDh>(a, blk, qf, sm.k[buf], kb, sm.s);
    __syncthreads();
    softmax_rows<T, kDh>(sm);
    __syncthreads();
    accumulate_pv<T, kDh>(sm, sm.v[buf], o);
    __syncthreads();  // the buffer is refilled by the next iteration's prefetch
  }
  cp_async_wait<0>();
  __syncthreads();
  finish<T, kDh>(a, blk, sm, o);
}

namespace {

template <typename T, int kDh>
Status launch_decode(const AttentionDecodeArgs& a, cudaStream_t stream) {
  constexpr size_t kSmem = sizeof(DecodeSmem<T, kDh>);
  CUDA_RETURN_IF_ERROR((allow_dynamic_smem<attention_decode_kernel<T, kDh>>(kSmem)));
  const dim3 grid(static_cast<unsigned>(a.splits), a.kv_heads, a.batch);
  CUDA_RETURN_IF_ERROR(launch_kernel(attention_decode_kernel<T, kDh>, grid, kThreads, kSmem, stream, a));
  return Status::ok();
}

template <typename T>
Status launch_decode_dh(const AttentionDecodeArgs& a, cudaStream_t stream) {
  if (a.head_dim == 64) return launch_decode<T, 64>(a, stream);
  if (a.head_dim == 128) return launch_decode<T, 128>(a, stream);
  return unsupported("attention (decode): head dim {} is not 64 or 128", a.head_dim);
}

}  // namespace

bool attention_decode_supported(int rows_per_kv_head, int head_dim, int splits, int keys_per_split, const void* q,
                                const void* out, const void* k_cache, const void* v_cache) {
  // Head dims and alignment as the 16-rows-per-warp kernel's (the same fragment loads).
  return rows_per_kv_head >= 1 && rows_per_kv_head <= kDecodeRows && splits >= 2 && splits <= kDecodeMaxSplits &&
         keys_per_split % kDecodeKeys == 0 && attention_tc_supported(head_dim, q, out, k_cache, v_cache);
}

Status attention_decode_cuda(const AttentionDecodeArgs& a, DType dtype, cudaStream_t stream) {
  if (a.splits < 2 || a.part_o == nullptr || a.part_lse == nullptr || a.done == nullptr)
    return invalid_argument("attention (decode): {} splits; needs >= 2 with the partial workspace and counters", a.splits);
  if (dtype == DType::kBF16) return launch_decode_dh<__nv_bfloat16>(a, stream);
  if (dtype == DType::kF16) return launch_decode_dh<__half>(a, stream);
  return unsupported("attention (decode): dtype {} is not bf16 or f16", dtype_name(dtype));
}

}  // namespace compactor
