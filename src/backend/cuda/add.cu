// Elementwise residual add: a grid-stride loop over all elements.
// Test: build-cuda/tests/test_cuda_ops --gtest_filter='*Add*' (on a GPU machine).
#include "backend/cuda/add.cuh"
#include "backend/cuda/device_utils.cuh"
#include "backend/cuda/launch.cuh"

namespace compactor {

template <typename T>
__global__ void add_kernel(T* x,            // [n]
                           const T* delta,  // [n]
                           int64_t n) {
  wait_for_prior_grids();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    x[i] = from_f32<T>(to_f32(x[i]) + to_f32(delta[i]));
}

template <typename T>
__global__ void add_vec_kernel(T* x,            // [n]
                               const T* delta,  // [n]
                               int64_t vecs) {
  wait_for_prior_grids();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < vecs;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float a[8], d[8];
    load8(x + i * 8, a);
    load8(delta + i * 8, d);
#pragma unroll
    for (int e = 0; e < 8; ++e) a[e] += d[e];
    store8(x + i * 8, a);
  }
}

Status add_cuda(View x, View delta, cudaStream_t stream) {
  RETURN_IF_ERROR(expect_act("add", "x", x));
  RETURN_IF_ERROR(expect_cuda("add", "delta", delta));
  RETURN_IF_ERROR(expect_same("add", "delta", delta, x));
  const int64_t n = x.numel();
  if (n == 0) return Status::ok();
  constexpr int kThreads = 256;
  return dispatch_act(x.dtype, "add", [&](auto tag) {
    using T = decltype(tag);
    if (vec8_ok(n, {x.data, delta.data}))
      CUDA_RETURN_IF_ERROR(launch_kernel(add_vec_kernel<T>, grid_for(n / 8, kThreads), kThreads, 0, stream, x.as<T>(),
                                         delta.as<T>(), n / 8));
    else
      CUDA_RETURN_IF_ERROR(
          launch_kernel(add_kernel<T>, grid_for(n, kThreads), kThreads, 0, stream, x.as<T>(), delta.as<T>(), n));
    return Status::ok();
  });
}

}  // namespace compactor
