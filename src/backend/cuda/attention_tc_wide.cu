// FlashAttention-2 forward on mma.sync with 32 query rows per warp (two m16 tiles), as in
// FlashAttention-2's 128×64 tiles for head dim 128: each K/V fragment loaded with ldmatrix feeds
// two MMAs instead of one (half the shared-memory traffic per FLOP, twice the independent MMA
// chains per warp). Q stays in shared memory and is read per 32-dim step. Same scheme, layouts,
// masking and split semantics as attention_tc.cu (the 16-rows-per-warp kernel), whose results it
// reproduces; selected with AttentionKernel::kTensorCoresWide (bench --attention tc-wide).
// Test: build-cuda/tests/test_cuda_ops --gtest_filter='*AttentionWide*' (on a GPU machine).
#include "backend/cuda/attention_tc.cuh"
#include "backend/cuda/mma.cuh"

namespace compactor {

namespace {

using namespace mma;  // NOLINT: the PTX wrappers of mma.cuh

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kM = 2;                        // m16 tiles per warp
constexpr int kRows = kWarps * 16 * kM;      // 128 query rows per block
constexpr int kKeys = kTcKeys;               // 64 keys per K/V tile

struct Block {
  int b, kvh, split, row0, n_rows, past, key_begin, key_end;
};

__device__ __forceinline__ Block make_block(const AttentionTcArgs& a) {
  Block blk;
  const int row_tiles = gridDim.x / a.splits;
  const int tile = row_tiles - 1 - static_cast<int>(blockIdx.x) % row_tiles;  // heavy (late) tiles first
  blk.split = blockIdx.x / row_tiles;
  blk.kvh = blockIdx.y;
  blk.b = blockIdx.z;
  blk.past = a.past[blk.b];
  blk.n_rows = a.tokens * a.group;
  blk.row0 = tile * kRows;
  const int last_row = min(blk.row0 + kRows, blk.n_rows) - 1;
  blk.key_begin = blk.split * a.keys_per_split;
  blk.key_end = min(blk.past + last_row / a.group + 1, blk.key_begin + a.keys_per_split);
  return blk;
}

__device__ __forceinline__ int64_t row_offset(const AttentionTcArgs& a, const Block& blk, int r) {
  const int t = r / a.group, head = blk.kvh * a.group + r % a.group;
  return ((static_cast<int64_t>(blk.b) * a.tokens + t) * a.heads + head) * a.head_dim;
}

template <typename T, int kDh>
__device__ __forceinline__ void load_q(const AttentionTcArgs& a, const Block& blk, T* q_s) {
  constexpr int kStride = kDh + 8, kVecs = kDh / 8;
  const T* q = static_cast<const T*>(a.q);
  for (int i = threadIdx.x; i < kRows * kVecs; i += kThreads) {
    const int r = i / kVecs, c = (i % kVecs) * 8, row = blk.row0 + r;
    const bool valid = row < blk.n_rows;
    cp_async16(q_s + r * kStride + c, valid ? q + row_offset(a, blk, row) + c : q, valid);
  }
}

template <typename T, int kDh>
__device__ __forceinline__ void load_kv(const AttentionTcArgs& a, const Block& blk, int kb, T* k_s, T* v_s) {
  constexpr int kStride = kDh + 8, kVecs = kDh / 8;
  const T* kc = static_cast<const T*>(a.k_cache);
  const T* vc = static_cast<const T*>(a.v_cache);
  const int64_t base = (static_cast<int64_t>(blk.b) * a.s_max * a.kv_heads + blk.kvh) * kDh;
  const int64_t key_step = static_cast<int64_t>(a.kv_heads) * kDh;
  for (int i = threadIdx.x; i < kKeys * kVecs; i += kThreads) {
    const int j = i / kVecs, c = (i % kVecs) * 8;
    const bool valid = kb + j < blk.key_end;
    const int64_t off = base + (kb + j) * key_step + c;
    cp_async16(k_s + j * kStride + c, valid ? kc + off : kc, valid);
    cp_async16(v_s + j * kStride + c, valid ? vc + off : vc, valid);
  }
}

// A warp's state for its kM m-tiles; this thread holds rows g and g + 8 of each.
template <int kDh>
struct WideState {
  float o[kM][kDh / 8][4];
  float m[kM][2], l[kM][2];
  int qpos[kM][2];
};

// S = Q·Kᵀ: per 16-dim step, the Q fragments of both m-tiles from shared memory, then each K
// fragment (ldmatrix.x4: two 8-key tiles) feeds both.
template <typename T, int kDh>
__device__ __forceinline__ void qk_tile(const T* q_w, const T* k_s, float (&s)[kM][8][4]) {
  constexpr int kStride = kDh + 8;
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int mt = 0; mt < kM; ++mt)
#pragma unroll
    for (int n = 0; n < 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[mt][n][e] = 0.f;
#pragma unroll
  for (int kk = 0; kk < kDh / 16; ++kk) {
    uint32_t qa[kM][4];
#pragma unroll
    for (int mt = 0; mt < kM; ++mt)
      ldmatrix_x4(qa[mt], q_w + (mt * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * kStride + kk * 16 + (lane >> 4) * 8);
#pragma unroll
    for (int n = 0; n < 8; n += 2) {
      uint32_t kf[4];  // b0/b1 of 8-key tiles n and n + 1 for dims kk·16 .. kk·16+15
      ldmatrix_x4(kf, k_s + ((n + (lane >> 4)) * 8 + (lane & 7)) * kStride + kk * 16 + ((lane >> 3) & 1) * 8);
#pragma unroll
      for (int mt = 0; mt < kM; ++mt) {
        mma16816<T>(s[mt][n], qa[mt], kf[0], kf[1]);
        mma16816<T>(s[mt][n + 1], qa[mt], kf[2], kf[3]);
      }
    }
  }
}

template <int kDh>
__device__ __forceinline__ void softmax_tile(WideState<kDh>& st, float (&s)[kM][8][4], int kb, int key_end,
                                             float scale_log2) {
  const int t = threadIdx.x & 3;
#pragma unroll
  for (int mt = 0; mt < kM; ++mt) {
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int n = 0; n < 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int h = e >> 1, key = kb + n * 8 + 2 * t + (e & 1);
        s[mt][n][e] = (key < key_end && key <= st.qpos[mt][h]) ? s[mt][n][e] * scale_log2 : -INFINITY;
        mx[h] = fmaxf(mx[h], s[mt][n][e]);
      }
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 1));
      mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 2));
      const float m_new = fmaxf(st.m[mt][h], mx[h]);
      const float alpha = m_new == -INFINITY ? 1.f : exp2f(st.m[mt][h] - m_new);
      float sum = 0.f;
#pragma unroll
      for (int n = 0; n < 8; ++n) {
#pragma unroll
        for (int e = 2 * h; e < 2 * h + 2; ++e) {
          s[mt][n][e] = m_new == -INFINITY ? 0.f : exp2f(s[mt][n][e] - m_new);
          sum += s[mt][n][e];
        }
      }
      st.l[mt][h] = st.l[mt][h] * alpha + sum;
      st.m[mt][h] = m_new;
#pragma unroll
      for (int d = 0; d < kDh / 8; ++d) {
        st.o[mt][d][2 * h] *= alpha;
        st.o[mt][d][2 * h + 1] *= alpha;
      }
    }
  }
}

// O += P·V: each V fragment (ldmatrix.trans) feeds both m-tiles.
template <typename T, int kDh>
__device__ __forceinline__ void pv_tile(WideState<kDh>& st, const float (&p)[kM][8][4], const T* v_s) {
  constexpr int kStride = kDh + 8;
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int j = 0; j < kKeys / 16; ++j) {
    uint32_t pa[kM][4];
#pragma unroll
    for (int mt = 0; mt < kM; ++mt) {
      pa[mt][0] = pack2<T>(p[mt][2 * j][0], p[mt][2 * j][1]);
      pa[mt][1] = pack2<T>(p[mt][2 * j][2], p[mt][2 * j][3]);
      pa[mt][2] = pack2<T>(p[mt][2 * j + 1][0], p[mt][2 * j + 1][1]);
      pa[mt][3] = pack2<T>(p[mt][2 * j + 1][2], p[mt][2 * j + 1][3]);
    }
#pragma unroll
    for (int d = 0; d < kDh / 8; d += 2) {
      uint32_t vf[4];
      ldmatrix_x4_trans(vf, v_s + (j * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * kStride + d * 8 + (lane >> 4) * 8);
#pragma unroll
      for (int mt = 0; mt < kM; ++mt) {
        mma16816<T>(st.o[mt][d], pa[mt], vf[0], vf[1]);
        mma16816<T>(st.o[mt][d + 1], pa[mt], vf[2], vf[3]);
      }
    }
  }
}

template <typename T, int kDh>
__device__ __forceinline__ void write_rows(const AttentionTcArgs& a, const Block& blk, const WideState<kDh>& st,
                                           int wrow0) {
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int64_t total_rows = static_cast<int64_t>(a.batch) * a.tokens * a.heads;
#pragma unroll
  for (int mt = 0; mt < kM; ++mt) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float l = st.l[mt][h];
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      const int r = wrow0 + mt * 16 + g + 8 * h;
      if (r >= blk.n_rows) continue;
      const float inv = l > 0.f ? 1.f / l : 0.f;
      const int64_t off = row_offset(a, blk, r);
      if (a.splits == 1) {
        T* out = static_cast<T*>(a.out) + off;
#pragma unroll
        for (int d = 0; d < kDh / 8; ++d)
          *reinterpret_cast<uint32_t*>(out + d * 8 + 2 * t) =
              pack2<T>(st.o[mt][d][2 * h] * inv, st.o[mt][d][2 * h + 1] * inv);
        continue;
      }
      const int64_t grow = off / kDh;
      float* po = a.part_o + (blk.split * total_rows + grow) * kDh;
#pragma unroll
      for (int d = 0; d < kDh / 8; ++d)
        *reinterpret_cast<float2*>(po + d * 8 + 2 * t) =
            make_float2(st.o[mt][d][2 * h] * inv, st.o[mt][d][2 * h + 1] * inv);
      if (t == 0) a.part_lse[blk.split * total_rows + grow] = l > 0.f ? st.m[mt][h] + log2f(l) : -INFINITY;
    }
  }
}

}  // namespace

template <typename T, int kDh>
__global__ void __launch_bounds__(kThreads, 2) attention_tc_wide_kernel(const AttentionTcArgs a) {
  constexpr int kStride = kDh + 8;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* q_s = reinterpret_cast<T*>(smem_raw);  // [128][kStride]
  T* k_s = q_s + kRows * kStride;           // [2][64][kStride]
  T* v_s = k_s + 2 * kKeys * kStride;       // [2][64][kStride]
  const Block blk = make_block(a);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int wrow0 = blk.row0 + warp * 16 * kM;
  const bool active = wrow0 < blk.n_rows;  // warp-uniform

  WideState<kDh> st;
#pragma unroll
  for (int mt = 0; mt < kM; ++mt) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = wrow0 + mt * 16 + (lane >> 2) + 8 * h;
      st.qpos[mt][h] = r < blk.n_rows ? blk.past + r / a.group : -1;
      st.m[mt][h] = -INFINITY;
      st.l[mt][h] = 0.f;
    }
#pragma unroll
    for (int d = 0; d < kDh / 8; ++d) st.o[mt][d][0] = st.o[mt][d][1] = st.o[mt][d][2] = st.o[mt][d][3] = 0.f;
  }

  const int n_tiles = blk.key_end > blk.key_begin ? (blk.key_end - blk.key_begin + kKeys - 1) / kKeys : 0;
  load_q<T, kDh>(a, blk, q_s);
  if (n_tiles > 0) load_kv<T, kDh>(a, blk, blk.key_begin, k_s, v_s);
  cp_async_commit();
  const T* q_w = q_s + warp * 16 * kM * kStride;
  for (int i = 0; i < n_tiles; ++i) {
    const int buf = i & 1;
    if (i + 1 < n_tiles) {
      load_kv<T, kDh>(a, blk, blk.key_begin + (i + 1) * kKeys, k_s + (buf ^ 1) * kKeys * kStride,
                      v_s + (buf ^ 1) * kKeys * kStride);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    if (active) {
      float s[kM][8][4];
      qk_tile<T, kDh>(q_w, k_s + buf * kKeys * kStride, s);
      softmax_tile<kDh>(st, s, blk.key_begin + i * kKeys, blk.key_end, a.scale_log2);
      pv_tile<T, kDh>(st, s, v_s + buf * kKeys * kStride);
    }
    __syncthreads();
  }
  cp_async_wait<0>();
  write_rows<T, kDh>(a, blk, st, wrow0);
}

namespace {

template <typename T, int kDh>
Status launch_wide(const AttentionTcArgs& a, cudaStream_t stream) {
  constexpr size_t kSmem = sizeof(T) * (kRows + 4 * kKeys) * (kDh + 8);
  static bool configured = false;  // once per instantiation, before any graph capture
  if (!configured) {
    CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(attention_tc_wide_kernel<T, kDh>,
                                              cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(kSmem)));
    configured = true;
  }
  const int64_t row_tiles = ceil_div(static_cast<int64_t>(a.tokens) * a.group, kRows);
  const int64_t gx = row_tiles * a.splits;
  if (gx > 0x7fffffff) return invalid_argument("attention: {} row tiles x {} splits exceed one grid", row_tiles, a.splits);
  const dim3 grid(static_cast<unsigned>(gx), a.kv_heads, a.batch);
  attention_tc_wide_kernel<T, kDh><<<grid, kThreads, kSmem, stream>>>(a);
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::ok();
}

template <typename T>
Status launch_wide_dh(const AttentionTcArgs& a, cudaStream_t stream) {
  if (a.head_dim == 64) return launch_wide<T, 64>(a, stream);
  if (a.head_dim == 128) return launch_wide<T, 128>(a, stream);
  return unsupported("attention (tensor cores, wide): head dim {} is not 64 or 128", a.head_dim);
}

}  // namespace

Status attention_tc_wide_cuda(const AttentionTcArgs& a, DType dtype, cudaStream_t stream) {
  if (dtype == DType::kBF16) return launch_wide_dh<__nv_bfloat16>(a, stream);
  if (dtype == DType::kF16) return launch_wide_dh<__half>(a, stream);
  return unsupported("attention (tensor cores, wide): dtype {} is not bf16 or f16", dtype_name(dtype));
}

}  // namespace compactor
