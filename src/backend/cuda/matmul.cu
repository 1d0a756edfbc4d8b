// Dense matmul through cublasGemmEx. Row-major y[T,N] = x[T,K]·w[N,K]ᵀ is, in cuBLAS's
// column-major terms, yᵀ[N,T] = op_T(w as [K,N], ld K) · (xᵀ as [K,T], ld K): the "TN" GEMM.
// A bias is written into y first and folded in with beta = 1, so y is rounded once.
// Decode-sized inputs (T <= 4 rows that fit in shared memory) take gemv_kernel instead: at these
// shapes the product is a stream over the weight, and a kernel that keeps x in shared memory and
// moves the weight in 16-byte loads, several in flight per lane, gets closer to HBM bandwidth
// than cuBLAS's small-N kernels (see bench/NOTES.md for the measurement).
// Test: build-cuda/tests/test_cuda_ops --gtest_filter='*Matmul*' (on a GPU machine).
#include <climits>

#include "backend/cuda/device_utils.cuh"
#include "backend/cuda/launch.cuh"
#include "backend/cuda/matmul.cuh"

namespace compactor {

template <typename T>
__global__ void matmul_bias_kernel(T* __restrict__ out,            // [T, N]
                                   const void* __restrict__ bias,  // [N] bias_dtype
                                   DType bias_dtype, int64_t rows, int64_t n) {
  wait_for_prior_grids();
  const int64_t total = rows * n;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = from_f32<T>(load_any(bias, bias_dtype, i % n));
}

namespace {

constexpr int kGemvWarps = 4;
constexpr int kGemvRowsPerWarp = 2;
constexpr int kGemvUnroll = 4;         // 16-byte loads per weight row in flight per lane
constexpr int kGemvMaxRows = 4;        // input rows (tokens)
constexpr int kGemvSmemBytes = 48 << 10;
constexpr int kGemvMaxGroup = 3;

template <typename T>
__device__ __forceinline__ float dot8(const uint4& w, const uint4& x) {
  const T* a = reinterpret_cast<const T*>(&w);
  const T* b = reinterpret_cast<const T*>(&x);
  float s = 0.f;
#pragma unroll
  for (int i = 0; i < 8; ++i) s = fmaf(to_f32(a[i]), to_f32(b[i]), s);
  return s;
}

}  // namespace

// Up to kGemvMaxGroup linears sharing one input x (q/k/v, gate/up) in one launch: member m owns
// blocks [block_end[m-1], block_end[m]).
struct GemvGroup {
  const void* w[kGemvMaxGroup];     // [N_m, K]
  void* out[kGemvMaxGroup];         // [rows, N_m]
  const void* bias[kGemvMaxGroup];  // [N_m] or null
  DType bias_dtype[kGemvMaxGroup];
  int64_t n[kGemvMaxGroup];
  int64_t block_end[kGemvMaxGroup];
  int count;
  bool accumulate;  // out += x · wᵀ (the residual add folded into the product)
  GemvInput input;  // how x is formed while it is loaded into shared memory
  const void* up;   // kSwiglu: [kRows, K] act; x is the gate
};

// x -> shared memory as the product's input: x itself or silu(x)·up, rounded to the activation
// dtype exactly as the separate op would store it.
template <typename T, int kRows>
__device__ __forceinline__ void load_gemv_input(const GemvGroup& g, const T* x, uint4* xs, int vecs) {
  const uint4* xg = reinterpret_cast<const uint4*>(x);
  if (g.input == GemvInput::kSwiglu) {
    const T* up = static_cast<const T*>(g.up);
    for (int i = threadIdx.x; i < kRows * vecs; i += blockDim.x) {
      float a[8], b[8], o[8];
      load8(x + i * 8, a);
      load8(up + i * 8, b);
#pragma unroll
      for (int e = 0; e < 8; ++e) o[e] = a[e] / (1.f + expf(-a[e])) * b[e];
      store8(reinterpret_cast<T*>(xs + i), o);
    }
  } else {
    for (int i = threadIdx.x; i < kRows * vecs; i += blockDim.x) xs[i] = xg[i];
  }
  __syncthreads();
}

// out[t, n] = Σ_k x[t, k] · w[n, k] (+ bias[n]) for t < kRows; a warp owns kGemvRowsPerWarp
// weight rows, lanes stride over K in 16-byte vectors, x sits in shared memory.
template <typename T, int kRows>
__global__ void __launch_bounds__(kGemvWarps * 32) gemv_kernel(const GemvGroup g,
                                                                const T* __restrict__ x,  // [kRows, K]
                                                                int64_t k) {
  extern __shared__ uint4 xs[];  // [kRows][K / 8]
  const int vecs = static_cast<int>(k / 8);
  // This block's member, picked with constant indices (no local-memory copy of the group).
  const T* w = nullptr;
  T* out = nullptr;
  const void* bias = nullptr;
  DType bias_dtype = DType::kF32;
  int64_t n = 0, block = blockIdx.x;
  bool found = false;
#pragma unroll
  for (int m = 0; m < kGemvMaxGroup; ++m) {
    if (!found && m < g.count && static_cast<int64_t>(blockIdx.x) < g.block_end[m]) {
      found = true;
      w = static_cast<const T*>(g.w[m]);
      out = static_cast<T*>(g.out[m]);
      bias = g.bias[m];
      bias_dtype = g.bias_dtype[m];
      n = g.n[m];
      block = blockIdx.x - (m > 0 ? g.block_end[m - 1] : 0);
    }
  }
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t row0 = (block * kGemvWarps + warp) * kGemvRowsPerWarp;
  const bool active = found && row0 < n;
  const uint4* wr[kGemvRowsPerWarp];
#pragma unroll
  for (int r = 0; r < kGemvRowsPerWarp; ++r)
    wr[r] = reinterpret_cast<const uint4*>(w + (active && row0 + r < n ? row0 + r : (active ? row0 : 0)) * k);
  // Weight loads of iteration i + 1 are in flight while iteration i computes; the first batch is
  // issued before the input prologue (the weights do not depend on x).
  auto load_batch = [&](uint4 (&wv)[kGemvUnroll][kGemvRowsPerWarp], int base) {
#pragma unroll
    for (int u = 0; u < kGemvUnroll; ++u) {
      const int i = base + 32 * u;
#pragma unroll
      for (int r = 0; r < kGemvRowsPerWarp; ++r)
        wv[u][r] = active && i < vecs ? __ldg(wr[r] + i) : make_uint4(0, 0, 0, 0);
    }
  };
  uint4 cur[kGemvUnroll][kGemvRowsPerWarp], nxt[kGemvUnroll][kGemvRowsPerWarp];
  load_batch(cur, lane);
  wait_for_prior_grids();  // x (and out, for accumulate) come from the previous kernels
  load_gemv_input<T, kRows>(g, x, xs, vecs);  // every thread: it holds barriers
  if (!active) return;
  float acc[kRows][kGemvRowsPerWarp] = {};
  for (int base = lane; base < vecs; base += 32 * kGemvUnroll) {
    if (base + 32 * kGemvUnroll < vecs) load_batch(nxt, base + 32 * kGemvUnroll);
#pragma unroll
    for (int u = 0; u < kGemvUnroll; ++u) {
      const int i = base + 32 * u;
      if (i >= vecs) break;
#pragma unroll
      for (int t = 0; t < kRows; ++t) {
        const uint4 xv = xs[t * vecs + i];
#pragma unroll
        for (int r = 0; r < kGemvRowsPerWarp; ++r) acc[t][r] += dot8<T>(cur[u][r], xv);
      }
    }
#pragma unroll
    for (int u = 0; u < kGemvUnroll; ++u)
#pragma unroll
      for (int r = 0; r < kGemvRowsPerWarp; ++r) cur[u][r] = nxt[u][r];
  }
#pragma unroll
  for (int t = 0; t < kRows; ++t) {
#pragma unroll
    for (int r = 0; r < kGemvRowsPerWarp; ++r) {
      const float v = warp_sum(acc[t][r]);
      if (lane == 0 && row0 + r < n) {
        T* o = out + t * n + row0 + r;
        *o = from_f32<T>(v + (bias != nullptr ? load_any(bias, bias_dtype, row0 + r) : 0.f) +
                         (g.accumulate ? to_f32(*o) : 0.f));
      }
    }
  }
}

namespace {

bool gemv_fits(int64_t rows, int64_t k, const View& x, const View& w) {
  auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  return rows >= 1 && rows <= kGemvMaxRows && k % 8 == 0 && rows * k * 2 <= kGemvSmemBytes && aligned(x.data) &&
         aligned(w.data);
}

template <typename T, int kRows>
Status launch_gemv(const GemvGroup& g, View x, cudaStream_t stream) {
  const int64_t blocks = g.block_end[g.count - 1];
  if (blocks > 0x7fffffff) return invalid_argument("matmul: {} GEMV blocks exceed one grid", blocks);
  const int64_t k = x.cols();
  const size_t smem = static_cast<size_t>(kRows * k * 2);
  CUDA_RETURN_IF_ERROR(launch_kernel(gemv_kernel<T, kRows>, static_cast<unsigned>(blocks), kGemvWarps * 32, smem,
                                     stream, g, x.as<T>(), k));
  return Status::ok();
}

// outs[m] = x · ws[m]ᵀ for m < count in one launch (every member passed gemv_fits, same K).
Status gemv(const View* outs, View x, const LinearWeight* const* ws, int count, cudaStream_t stream,
            bool accumulate = false, const GemvPrologue& pro = {}) {
  GemvGroup g{};
  g.count = count;
  g.accumulate = accumulate;
  g.input = pro.input;
  g.up = pro.up.data;
  int64_t blocks = 0;
  for (int m = 0; m < count; ++m) {
    g.w[m] = ws[m]->weight.data;
    g.out[m] = outs[m].data;
    g.bias[m] = ws[m]->bias.data;
    g.bias_dtype[m] = ws[m]->bias.dtype;
    g.n[m] = ws[m]->weight.rows();
    blocks += ceil_div(g.n[m], kGemvWarps * kGemvRowsPerWarp);
    g.block_end[m] = blocks;
  }
  return dispatch_act(x.dtype, "matmul", [&](auto tag) {
    using T = decltype(tag);
    switch (x.rows()) {
      case 1: return launch_gemv<T, 1>(g, x, stream);
      case 2: return launch_gemv<T, 2>(g, x, stream);
      case 3: return launch_gemv<T, 3>(g, x, stream);
      default: return launch_gemv<T, 4>(g, x, stream);
    }
  });
}

Status check_matmul(View out, View x, const LinearWeight& w) {
  RETURN_IF_ERROR(expect_act("matmul", "x", x));
  RETURN_IF_ERROR(expect_cuda("matmul", "out", out));
  RETURN_IF_ERROR(expect_cuda("matmul", "weight", w.weight));
  if (!format_is_dense(w.format))
    return unsupported("matmul: weight format {} has no CUDA kernel yet", format_name(w.format));
  if (w.weight.dtype != x.dtype)
    return unsupported("matmul: weight dtype {} differs from the activation dtype {}; convert weights to the "
                       "activation dtype when uploading them",
                       dtype_name(w.weight.dtype), dtype_name(x.dtype));
  const int64_t n = w.weight.rows(), k = w.weight.cols();
  if (w.weight.shape.ndim != 2 || (w.out_features && w.out_features != n) || (w.in_features && w.in_features != k))
    return invalid_argument("matmul: weight {} does not match out_features {} x in_features {}", w.weight.shape.str(),
                            w.out_features, w.in_features);
  RETURN_IF_ERROR(expect_shape2("matmul", "x", x, x.rows(), k));
  if (out.dtype != x.dtype) return invalid_argument("matmul: out is {} but x is {}", dtype_name(out.dtype), dtype_name(x.dtype));
  RETURN_IF_ERROR(expect_shape2("matmul", "out", out, x.rows(), n));
  if (w.bias.data != nullptr) {
    RETURN_IF_ERROR(expect_cuda("matmul", "bias", w.bias));
    if (w.bias.numel() != n || !is_float_dtype_cuda(w.bias.dtype))
      return invalid_argument("matmul: bias {} {} does not match [{}] float", w.bias.shape.str(),
                              dtype_name(w.bias.dtype), n);
  }
  if (n > INT_MAX || k > INT_MAX || x.rows() > INT_MAX)
    return invalid_argument("matmul: sizes T={} N={} K={} exceed cuBLAS's int range", x.rows(), n, k);
  if (out.data == x.data) return invalid_argument("matmul: out must not alias x");
  return Status::ok();
}

cudaDataType_t cuda_type(DType d) { return d == DType::kBF16 ? CUDA_R_16BF : CUDA_R_16F; }

}  // namespace

Status matmul_cuda(View out, View x, const LinearWeight& w, cublasHandle_t handle, cudaStream_t stream,
                   bool allow_gemv, bool accumulate) {
  RETURN_IF_ERROR(check_matmul(out, x, w));
  if (accumulate && w.bias.data != nullptr) return invalid_argument("matmul: accumulate with a bias is not supported");
  const int rows = static_cast<int>(x.rows());
  const int n = static_cast<int>(w.weight.rows()), k = static_cast<int>(w.weight.cols());
  if (rows == 0 || n == 0) return Status::ok();
  if (allow_gemv && gemv_fits(rows, k, x, w.weight)) {
    const LinearWeight* ws[] = {&w};
    return gemv(&out, x, ws, 1, stream, accumulate);
  }
  float beta = accumulate ? 1.f : 0.f;
  if (w.bias.data != nullptr) {
    constexpr int kThreads = 256;
    RETURN_IF_ERROR(dispatch_act(out.dtype, "matmul", [&](auto tag) {
      using T = decltype(tag);
      CUDA_RETURN_IF_ERROR(launch_kernel(matmul_bias_kernel<T>, grid_for(static_cast<int64_t>(rows) * n, kThreads),
                                         kThreads, 0, stream, out.as<T>(), w.bias.data, w.bias.dtype, rows, n));
      return Status::ok();
    }));
    beta = 1.f;
  }
  const float alpha = 1.f;
  const cudaDataType_t t = cuda_type(x.dtype);
  CUBLAS_RETURN_IF_ERROR(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, n, rows, k, &alpha, w.weight.data, t, k,
                                      x.data, t, k, &beta, out.data, t, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  return Status::ok();
}

Status matmul_group_cuda(const View* outs, View x, const LinearWeight* const* ws, int count, cublasHandle_t handle,
                         cudaStream_t stream, bool allow_gemv) {
  if (count < 1 || count > kGemvMaxGroup) return invalid_argument("matmul_group: {} linears (1..{})", count, kGemvMaxGroup);
  bool one_launch = allow_gemv;
  for (int m = 0; m < count; ++m) {
    RETURN_IF_ERROR(check_matmul(outs[m], x, *ws[m]));
    one_launch = one_launch && gemv_fits(x.rows(), x.cols(), x, ws[m]->weight) && outs[m].data != nullptr &&
                 ws[m]->weight.rows() > 0;
    for (int o = 0; o < m; ++o)
      if (outs[o].data == outs[m].data) return invalid_argument("matmul_group: outputs {} and {} alias", o, m);
  }
  if (x.rows() == 0) return Status::ok();
  if (one_launch) return gemv(outs, x, ws, count, stream);
  for (int m = 0; m < count; ++m) RETURN_IF_ERROR(matmul_cuda(outs[m], x, *ws[m], handle, stream, allow_gemv));
  return Status::ok();
}

bool gemv_group_supported(View x, const LinearWeight* const* ws, int count) {
  if (count < 1 || count > kGemvMaxGroup || !is_act_dtype(x.dtype)) return false;
  for (int m = 0; m < count; ++m)
    if (ws[m]->quantized() || ws[m]->weight.dtype != x.dtype || ws[m]->weight.cols() != x.cols() ||
        ws[m]->weight.rows() <= 0 || !gemv_fits(x.rows(), x.cols(), x, ws[m]->weight))
      return false;
  return true;
}

Status gemv_group_cuda(const View* outs, View x, const LinearWeight* const* ws, int count, const GemvPrologue& pro,
                       bool accumulate, cudaStream_t stream) {
  if (!gemv_group_supported(x, ws, count))
    return invalid_argument("gemv_group: x {} and these weights do not fit the GEMV kernel", x.shape.str());
  for (int m = 0; m < count; ++m) {
    RETURN_IF_ERROR(check_matmul(outs[m], x, *ws[m]));
    if (accumulate && ws[m]->bias.data != nullptr) return invalid_argument("gemv_group: accumulate with a bias");
  }
  if (pro.input == GemvInput::kSwiglu) {
    RETURN_IF_ERROR(expect_same("gemv_group", "up", pro.up, x));
    if (reinterpret_cast<uintptr_t>(pro.up.data) % 16 != 0) return invalid_argument("gemv_group: up is not 16-byte aligned");
  }
  if (x.rows() == 0) return Status::ok();
  return gemv(outs, x, ws, count, stream, accumulate, pro);
}

}  // namespace compactor
