// Fused residual add + RMSNorm: one block per row. The norm uses the residual as stored (after
// rounding), so the next layer sees exactly the values that were normalised. Each thread reads
// and writes the same indices in both passes, so out may alias delta.
// Test: build-cuda/tests/test_cuda_ops --gtest_filter='*AddRmsNorm*' (on a GPU machine).
#include "backend/cuda/add_rms_norm.cuh"
#include "backend/cuda/device_utils.cuh"
#include "backend/cuda/launch.cuh"
#include "backend/cuda/rms_norm.cuh"

namespace compactor {

template <typename T>
__global__ void add_rms_norm_kernel(T* out,                           // [T, D]
                                    T* residual,                      // [T, D]
                                    const T* delta,                   // [T, D]
                                    const void* __restrict__ weight,  // [D] weight_dtype
                                    DType weight_dtype, int64_t dim, float eps) {
  wait_for_prior_grids();
  const int64_t base = static_cast<int64_t>(blockIdx.x) * dim;
  float ss = 0.f;
  for (int64_t d = threadIdx.x; d < dim; d += blockDim.x) {
    const T r = from_f32<T>(to_f32(residual[base + d]) + to_f32(delta[base + d]));
    residual[base + d] = r;
    const float v = to_f32(r);
    ss += v * v;
  }
  const float rstd = rsqrtf(block_sum(ss) / static_cast<float>(dim) + eps);
  for (int64_t d = threadIdx.x; d < dim; d += blockDim.x)
    out[base + d] = from_f32<T>(to_f32(residual[base + d]) * rstd * load_any(weight, weight_dtype, d));
}

// 16-byte version (see rms_norm_vec_kernel): the rounded residual stays in registers.
template <typename T>
__global__ void add_rms_norm_vec_kernel(T* out,                           // [T, D]
                                        T* residual,                      // [T, D]
                                        const T* delta,                   // [T, D]
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
    float d[8];
    load8(residual + base + i * 8, v[c]);
    load8(delta + base + i * 8, d);
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      v[c][e] = to_f32(from_f32<T>(v[c][e] + d[e]));  // the value stored, as stored
      ss += v[c][e] * v[c][e];
    }
    store8(residual + base + i * 8, v[c]);
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

Status add_rms_norm_cuda(View out, View residual, View delta, View weight, float eps, cudaStream_t stream) {
  RETURN_IF_ERROR(expect_act("add_rms_norm", "residual", residual));
  RETURN_IF_ERROR(expect_cuda("add_rms_norm", "delta", delta));
  RETURN_IF_ERROR(expect_cuda("add_rms_norm", "out", out));
  RETURN_IF_ERROR(expect_same("add_rms_norm", "delta", delta, residual));
  RETURN_IF_ERROR(expect_same("add_rms_norm", "out", out, residual));
  RETURN_IF_ERROR(check_norm_weight("add_rms_norm", weight, residual.cols()));
  if (out.data == residual.data) return invalid_argument("add_rms_norm: out must not alias residual");
  const int64_t rows = residual.rows(), dim = residual.cols();
  if (rows == 0) return Status::ok();
  if (rows > 0x7fffffff) return invalid_argument("add_rms_norm: {} rows exceed one grid", rows);
  return dispatch_act(residual.dtype, "add_rms_norm", [&](auto tag) {
    using T = decltype(tag);
    if (norm_vec_ok(dim, {out.data, residual.data, delta.data}))
      CUDA_RETURN_IF_ERROR(launch_kernel(add_rms_norm_vec_kernel<T>, static_cast<unsigned>(rows), norm_vec_threads(dim),
                                         0, stream, out.as<T>(), residual.as<T>(), delta.as<T>(), weight.data,
                                         weight.dtype, dim, eps));
    else
      CUDA_RETURN_IF_ERROR(launch_kernel(add_rms_norm_kernel<T>, static_cast<unsigned>(rows), norm_threads(dim), 0,
                                         stream, out.as<T>(), residual.as<T>(), delta.as<T>(), weight.data,
                                         weight.dtype, dim, eps));
    return Status::ok();
  });
}

}  // namespace compactor
