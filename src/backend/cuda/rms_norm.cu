// RMSNorm (Zhang & Sennrich 2019) as in HF Llama: one block per row; pass 1 sums squares in f32,
// pass 2 rescales. Each thread touches the same indices in both passes, so out may alias x.
// Test: build-cuda/tests/test_cuda_ops --gtest_filter='*RmsNorm*' (on a GPU machine).
#include <algorithm>

#include "backend/cuda/device_utils.cuh"
#include "backend/cuda/launch.cuh"
#include "backend/cuda/rms_norm.cuh"

namespace compactor {

template <typename T>
__global__ void rms_norm_kernel(T* out,                            // [T, D]
                                const T* x,                        // [T, D]
                                const void* __restrict__ weight,   // [D] weight_dtype
                                DType weight_dtype, int64_t dim, float eps) {
  wait_for_prior_grids();
  const int64_t base = static_cast<int64_t>(blockIdx.x) * dim;
  float ss = 0.f;
  for (int64_t d = threadIdx.x; d < dim; d += blockDim.x) {
    const float v = to_f32(x[base + d]);
    ss += v * v;
  }
  const float rstd = rsqrtf(block_sum(ss) / static_cast<float>(dim) + eps);
  for (int64_t d = threadIdx.x; d < dim; d += blockDim.x)
    out[base + d] = from_f32<T>(to_f32(x[base + d]) * rstd * load_any(weight, weight_dtype, d));
}

// 16-byte version: each thread keeps its (at most kNormChunks) 8-element vectors of the row in
// registers, so x is read once. Requires D % 8 == 0, aligned rows and D <= 8·kNormChunks·1024.
template <typename T>
__global__ void rms_norm_vec_kernel(T* out,                           // [T, D]
                                    const T* x,                       // [T, D]
                                    const void* __restrict__ weight,  // [D] weight_dtype
                                    DType weight_dtype, int64_t dim, float eps) {
  wait_for_prior_grids();
  const int64_t base = static_cast<int64_t>(blockIdx.x) * dim;
  const int chunks = static_cast<int>(dim / 8);
  float v[kNormChunks][8];
  float ss = 0.f;
#pragma unroll
  for (int c = 0; c < kNormChunks; ++c) {
    const int i = threadIdx.x + c * blockDim.x;
    if (i >= chunks) break;
    load8(x + base + i * 8, v[c]);
#pragma unroll
    for (int e = 0; e < 8; ++e) ss += v[c][e] * v[c][e];
  }
  const float rstd = rsqrtf(block_sum(ss) / static_cast<float>(dim) + eps);
#pragma unroll
  for (int c = 0; c < kNormChunks; ++c) {
    const int i = threadIdx.x + c * blockDim.x;
    if (i >= chunks) break;
    float o[8];
#pragma unroll
    for (int e = 0; e < 8; ++e) o[e] = v[c][e] * rstd * load_any(weight, weight_dtype, i * 8 + e);
    store8(out + base + i * 8, o);
  }
}

int norm_vec_threads(int64_t dim) {
  const int64_t chunks = dim / 8;
  const int64_t threads = std::min<int64_t>(1024, (chunks + 31) / 32 * 32);
  return static_cast<int>(threads);
}

bool norm_vec_ok(int64_t dim, std::initializer_list<const void*> ptrs) {
  return vec8_ok(dim, ptrs) && dim / 8 <= static_cast<int64_t>(kNormChunks) * 1024;
}

Status check_norm_weight(const char* op, View weight, int64_t dim) {
  RETURN_IF_ERROR(expect_cuda(op, "weight", weight));
  if (!is_float_dtype_cuda(weight.dtype))
    return unsupported("{}: weight dtype {} is not f32, f16 or bf16", op, dtype_name(weight.dtype));
  if (weight.numel() != dim) return invalid_argument("{}: weight {} does not match D = {}", op, weight.shape.str(), dim);
  return Status::ok();
}

int norm_threads(int64_t dim) {
  if (dim >= 4096) return 1024;
  if (dim >= 1024) return 512;
  if (dim >= 256) return 256;
  return 64;
}

Status rms_norm_cuda(View out, View x, View weight, float eps, cudaStream_t stream) {
  RETURN_IF_ERROR(expect_act("rms_norm", "x", x));
  RETURN_IF_ERROR(expect_cuda("rms_norm", "out", out));
  RETURN_IF_ERROR(expect_same("rms_norm", "out", out, x));
  RETURN_IF_ERROR(check_norm_weight("rms_norm", weight, x.cols()));
  const int64_t rows = x.rows(), dim = x.cols();
  if (rows == 0) return Status::ok();
  if (rows > 0x7fffffff) return invalid_argument("rms_norm: {} rows exceed one grid", rows);
  return dispatch_act(x.dtype, "rms_norm", [&](auto tag) {
    using T = decltype(tag);
    if (norm_vec_ok(dim, {out.data, x.data}))
      CUDA_RETURN_IF_ERROR(launch_kernel(rms_norm_vec_kernel<T>, static_cast<unsigned>(rows), norm_vec_threads(dim), 0,
                                         stream, out.as<T>(), x.as<T>(), weight.data, weight.dtype, dim, eps));
    else
      CUDA_RETURN_IF_ERROR(launch_kernel(rms_norm_kernel<T>, static_cast<unsigned>(rows), norm_threads(dim), 0, stream,
                                         out.as<T>(), x.as<T>(), weight.data, weight.dtype, dim, eps));
    return Status::ok();
  });
}

}  // namespace compactor
