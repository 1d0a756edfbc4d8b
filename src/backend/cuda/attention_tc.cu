// FlashAttention-2 forward on mma.sync (see attention_tc.cuh for the scheme).
//
// Fragment layouts of mma.m16n8k16 (g = lane / 4, t = lane % 4), which the loads below produce
// with ldmatrix from row-major [row][dim] shared tiles padded by 8 elements (16 bytes, so the 8
// row addresses of one 8×8 matrix fall in distinct banks):
//   A (16×16, Q or P):  a0 = (g, 2t..2t+1)  a1 = (g+8, 2t..)  a2 = (g, 2t+8..)  a3 = (g+8, 2t+8..)
//   B (16×8, Kᵀ or V):  b0 = (k 2t..2t+1, n g)  b1 = (k 2t+8.., n g)
//   C (16×8, S or O):   c0,c1 = (g, 2t..2t+1)  c2,c3 = (g+8, 2t..2t+1)
// S's C layout over two adjacent 8-key tiles is P's A layout for one 16-key chunk, so P never
// leaves registers. K rows are B operands as stored (ldmatrix); V needs ldmatrix.trans.
// Test: build-cuda/tests/test_cuda_ops --gtest_filter='*Attention*' (on a GPU machine).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "backend/cuda/attention_tc.cuh"
#include "backend/cuda/launch.cuh"
#include "backend/cuda/mma.cuh"

namespace compactor {

namespace {

using namespace mma;  // NOLINT: the PTX wrappers of mma.cuh

constexpr int kThreads = 128;  // 4 warps × 16 rows

// Where the block's work lies: its query rows and its key range.
struct TcBlock {
  int b, kvh, split, row0, n_rows, past, key_begin, key_end;
};

__device__ __forceinline__ TcBlock tc_block(const AttentionTcArgs& a) {
  TcBlock blk;
  const int row_tiles = gridDim.x / a.splits;
  // Later row tiles see more keys (causal): schedule them first.
  const int tile = row_tiles - 1 - static_cast<int>(blockIdx.x) % row_tiles;
  blk.split = blockIdx.x / row_tiles;
  blk.kvh = blockIdx.y;
  blk.b = blockIdx.z;
  blk.past = a.past[blk.b];
  blk.n_rows = a.tokens * a.group;
  blk.row0 = tile * kTcRows;
  const int last_row = min(blk.row0 + kTcRows, blk.n_rows) - 1;
  blk.key_begin = blk.split * a.keys_per_split;
  blk.key_end = min(blk.past + last_row / a.group + 1, blk.key_begin + a.keys_per_split);
  return blk;
}

// Row r of the block -> element offset of (token t, head) in q/out: ((b·T + t)·H + head)·Dh.
__device__ __forceinline__ int64_t row_offset(const AttentionTcArgs& a, const TcBlock& blk, int r) {
  const int t = r / a.group, head = blk.kvh * a.group + r % a.group;
  return ((static_cast<int64_t>(blk.b) * a.tokens + t) * a.heads + head) * a.head_dim;
}

template <typename T, int kDh>
__device__ __forceinline__ void load_q(const AttentionTcArgs& a, const TcBlock& blk, T* q_s) {
  constexpr int kStride = kDh + 8, kVecs = kDh / 8;
  const T* q = static_cast<const T*>(a.q);
  for (int i = threadIdx.x; i < kTcRows * kVecs; i += kThreads) {
    const int r = i / kVecs, c = (i % kVecs) * 8, row = blk.row0 + r;
    const bool valid = row < blk.n_rows;
    cp_async16(q_s + r * kStride + c, valid ? q + row_offset(a, blk, row) + c : q, valid);
  }
}

template <typename T, int kDh>
__device__ __forceinline__ void load_kv(const AttentionTcArgs& a, const TcBlock& blk, int kb, T* k_s, T* v_s) {
  constexpr int kStride = kDh + 8, kVecs = kDh / 8;
  const T* kc = static_cast<const T*>(a.k_cache);
  const T* vc = static_cast<const T*>(a.v_cache);
  const int64_t base = (static_cast<int64_t>(blk.b) * a.s_max * a.kv_heads + blk.kvh) * kDh;
  const int64_t key_step = static_cast<int64_t>(a.kv_heads) * kDh;
  for (int i = threadIdx.x; i < kTcKeys * kVecs; i += kThreads) {
    const int j = i / kVecs, c = (i % kVecs) * 8;
    const bool valid = kb + j < blk.key_end;  // zero rows past the end: 0 · garbage never becomes NaN
    const int64_t off = base + (kb + j) * key_step + c;
    cp_async16(k_s + j * kStride + c, valid ? kc + off : kc, valid);
    cp_async16(v_s + j * kStride + c, valid ? vc + off : vc, valid);
  }
}

// One warp's running state for its 16 rows: this thread holds rows g (lo) and g + 8 (hi).
template <int kDh>
struct WarpState {
  uint32_t qf[kDh / 16][4];
  float o[kDh / 8][4];
  float m[2], l[2];  // running max (log2 domain) and this thread's share of the sum
  int qpos[2];       // last visible key per row; -1 for padding rows
};

// S = Q·Kᵀ for the warp's 16 rows × 64 keys.
template <typename T, int kDh>
__device__ __forceinline__ void qk_tile(const WarpState<kDh>& st, const T* k_s, float (&s)[8][4]) {
  constexpr int kStride = kDh + 8;
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int n = 0; n < 8; ++n) {
#pragma unroll
    for (int e = 0; e < 4; ++e) s[n][e] = 0.f;
#pragma unroll
    for (int kk = 0; kk < kDh / 16; kk += 2) {
      uint32_t kf[4];  // b0/b1 of dim chunks kk and kk + 1 for keys n·8 .. n·8+7
      ldmatrix_x4(kf, k_s + (n * 8 + (lane & 7)) * kStride + kk * 16 + (lane >> 3) * 8);
      mma16816<T>(s[n], st.qf[kk], kf[0], kf[1]);
      mma16816<T>(s[n], st.qf[kk + 1], kf[2], kf[3]);
    }
  }
}

// Masks, scales into the log2 domain, updates the running max/sum, rescales O; s becomes P.
template <int kDh>
__device__ __forceinline__ void softmax_tile(WarpState<kDh>& st, float (&s)[8][4], int kb, int key_end,
                                             float scale_log2) {
  const int t = threadIdx.x & 3;
  float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
  for (int n = 0; n < 8; ++n) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int h = e >> 1, key = kb + n * 8 + 2 * t + (e & 1);
      s[n][e] = (key < key_end && key <= st.qpos[h]) ? s[n][e] * scale_log2 : -INFINITY;
      mx[h] = fmaxf(mx[h], s[n][e]);
    }
  }
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 1));
    mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 2));
    const float m_new = fmaxf(st.m[h], mx[h]);
    const float alpha = m_new == -INFINITY ? 1.f : exp2f(st.m[h] - m_new);
    float sum = 0.f;
#pragma unroll
    for (int n = 0; n < 8; ++n) {
#pragma unroll
      for (int e = 2 * h; e < 2 * h + 2; ++e) {
        s[n][e] = m_new == -INFINITY ? 0.f : exp2f(s[n][e] - m_new);
        sum += s[n][e];
      }
    }
    st.l[h] = st.l[h] * alpha + sum;
    st.m[h] = m_new;
#pragma unroll
    for (int d = 0; d < kDh / 8; ++d) {
      st.o[d][2 * h] *= alpha;
      st.o[d][2 * h + 1] *= alpha;
    }
  }
}

// O += P·V for the warp's 16 rows over the tile's 64 keys.
template <typename T, int kDh>
__device__ __forceinline__ void pv_tile(WarpState<kDh>& st, const float (&p)[8][4], const T* v_s) {
  constexpr int kStride = kDh + 8;
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int j = 0; j < kTcKeys / 16; ++j) {
    const uint32_t pa[4] = {pack2<T>(p[2 * j][0], p[2 * j][1]), pack2<T>(p[2 * j][2], p[2 * j][3]),
                            pack2<T>(p[2 * j + 1][0], p[2 * j + 1][1]), pack2<T>(p[2 * j + 1][2], p[2 * j + 1][3])};
#pragma unroll
    for (int d = 0; d < kDh / 8; d += 2) {
      uint32_t vf[4];  // b0/b1 of dim tiles d and d + 1 for keys j·16 .. j·16+15
      ldmatrix_x4_trans(vf, v_s + (j * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * kStride + d * 8 + (lane >> 4) * 8);
      mma16816<T>(st.o[d], pa, vf[0], vf[1]);
      mma16816<T>(st.o[d + 1], pa, vf[2], vf[3]);
    }
  }
}

template <typename T, int kDh>
__device__ __forceinline__ void write_rows(const AttentionTcArgs& a, const TcBlock& blk, WarpState<kDh>& st, int wrow0) {
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int64_t total_rows = static_cast<int64_t>(a.batch) * a.tokens * a.heads;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    float l = st.l[h];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    const int r = wrow0 + g + 8 * h;
    if (r >= blk.n_rows) continue;
    const float inv = l > 0.f ? 1.f / l : 0.f;
    const int64_t off = row_offset(a, blk, r);
    if (a.splits == 1) {
      T* out = static_cast<T*>(a.out) + off;
#pragma unroll
      for (int d = 0; d < kDh / 8; ++d)
        *reinterpret_cast<uint32_t*>(out + d * 8 + 2 * t) = pack2<T>(st.o[d][2 * h] * inv, st.o[d][2 * h + 1] * inv);
      continue;
    }
    const int64_t grow = off / kDh;
    float* po = a.part_o + (blk.split * total_rows + grow) * kDh;
#pragma unroll
    for (int d = 0; d < kDh / 8; ++d)
      *reinterpret_cast<float2*>(po + d * 8 + 2 * t) = make_float2(st.o[d][2 * h] * inv, st.o[d][2 * h + 1] * inv);
    if (t == 0) a.part_lse[blk.split * total_rows + grow] = l > 0.f ? st.m[h] + log2f(l) : -INFINITY;
  }
}

}  // namespace

template <typename T, int kDh>
__global__ void __launch_bounds__(kThreads) attention_tc_kernel(const AttentionTcArgs a) {
  wait_for_prior_grids();
  constexpr int kStride = kDh + 8;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* q_s = reinterpret_cast<T*>(smem_raw);  // [64][kStride]
  T* k_s = q_s + kTcRows * kStride;         // [2][64][kStride]
  T* v_s = k_s + 2 * kTcKeys * kStride;     // [2][64][kStride]
  const TcBlock blk = tc_block(a);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int wrow0 = blk.row0 + warp * 16;
  const bool active = wrow0 < blk.n_rows;  // warp-uniform: padding warps only help load

  WarpState<kDh> st;
  st.m[0] = st.m[1] = -INFINITY;
  st.l[0] = st.l[1] = 0.f;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int r = wrow0 + (lane >> 2) + 8 * h;
    st.qpos[h] = r < blk.n_rows ? blk.past + r / a.group : -1;
  }
#pragma unroll
  for (int d = 0; d < kDh / 8; ++d) st.o[d][0] = st.o[d][1] = st.o[d][2] = st.o[d][3] = 0.f;

  const int n_tiles = blk.key_end > blk.key_begin ? (blk.key_end - blk.key_begin + kTcKeys - 1) / kTcKeys : 0;
  load_q<T, kDh>(a, blk, q_s);
  if (n_tiles > 0) load_kv<T, kDh>(a, blk, blk.key_begin, k_s, v_s);
  cp_async_commit();
  for (int i = 0; i < n_tiles; ++i) {
    const int buf = i & 1;
    if (i + 1 < n_tiles) {  // prefetch the next tile into the other buffer
      load_kv<T, kDh>(a, blk, blk.key_begin + (i + 1) * kTcKeys, k_s + (buf ^ 1) * kTcKeys * kStride,
                      v_s + (buf ^ 1) * kTcKeys * kStride);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    if (active) {
      if (i == 0) {
#pragma unroll
        for (int kk = 0; kk < kDh / 16; ++kk)
          ldmatrix_x4(st.qf[kk], q_s + (warp * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * kStride + kk * 16 +
                                     (lane >> 4) * 8);
      }
      float s[8][4];
      qk_tile<T, kDh>(st, k_s + buf * kTcKeys * kStride, s);
      softmax_tile<kDh>(st, s, blk.key_begin + i * kTcKeys, blk.key_end, a.scale_log2);
      pv_tile<T, kDh>(st, s, v_s + buf * kTcKeys * kStride);
    }
    __syncthreads();  // the buffer is refilled by the next iteration's prefetch
  }
  cp_async_wait<0>();
  write_rows<T, kDh>(a, blk, st, wrow0);
}

namespace {

template <typename T, int kDh>
Status launch_tc(const AttentionTcArgs& a, cudaStream_t stream) {
  constexpr size_t kSmem = sizeof(T) * (kTcRows + 4 * kTcKeys) * (kDh + 8);
  CUDA_RETURN_IF_ERROR((allow_dynamic_smem<attention_tc_kernel<T, kDh>>(kSmem)));
  const int64_t row_tiles = ceil_div(static_cast<int64_t>(a.tokens) * a.group, kTcRows);
  const int64_t gx = row_tiles * a.splits;
  if (gx > 0x7fffffff) return invalid_argument("attention: {} row tiles x {} splits exceed one grid", row_tiles, a.splits);
  const dim3 grid(static_cast<unsigned>(gx), a.kv_heads, a.batch);
  CUDA_RETURN_IF_ERROR(launch_kernel(attention_tc_kernel<T, kDh>, grid, kThreads, kSmem, stream, a));
  return Status::ok();
}

template <typename T>
Status launch_tc_dh(const AttentionTcArgs& a, cudaStream_t stream) {
  if (a.head_dim == 64) return launch_tc<T, 64>(a, stream);
  if (a.head_dim == 128) return launch_tc<T, 128>(a, stream);
  return unsupported("attention (tensor cores): head dim {} is not 64 or 128", a.head_dim);
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

bool attention_tc_supported(int head_dim, const void* q, const void* out, const void* k_cache, const void* v_cache) {
  return (head_dim == 64 || head_dim == 128) && aligned16(q) && aligned16(out) && aligned16(k_cache) &&
         aligned16(v_cache);
}

Status attention_tc_cuda(const AttentionTcArgs& a, DType dtype, cudaStream_t stream) {
  if (dtype == DType::kBF16) return launch_tc_dh<__nv_bfloat16>(a, stream);
  if (dtype == DType::kF16) return launch_tc_dh<__half>(a, stream);
  return unsupported("attention (tensor cores): dtype {} is not bf16 or f16", dtype_name(dtype));
}

}  // namespace compactor
