// SwiGLU gate: a grid-stride loop; silu(g) = g / (1 + exp(-g)) with the accurate expf.
// Test: build-cuda/tests/test_cuda_ops --gtest_filter='*Swiglu*' (on a GPU machine).
#include "backend/cuda/device_utils.cuh"
#include "backend/cuda/launch.cuh"
#include "backend/cuda/swiglu.cuh"

namespace compactor {

template <typename T>
__global__ void swiglu_kernel(T* out,         // [n]
                              const T* gate,  // [n]
                              const T* up,    // [n]
                              int64_t n) {
  wait_for_prior_grids();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float g = to_f32(gate[i]);
    out[i] = from_f32<T>(g / (1.f + expf(-g)) * to_f32(up[i]));
  }
}

template <typename T>
__global__ void swiglu_vec_kernel(T* out,         // [n]
                                  const T* gate,  // [n]
                                  const T* up,    // [n]
                                  int64_t vecs) {
  wait_for_prior_grids();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < vecs;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float g[8], u[8], o[8];
    load8(gate + i * 8, g);
    load8(up + i * 8, u);
#pragma unroll
    for (int e = 0; e < 8; ++e) o[e] = g[e] / (1.f + expf(-g[e])) * u[e];
    store8(out + i * 8, o);
  }
}

Status swiglu_cuda(View out, View gate, View up, cudaStream_t stream) {
  RETURN_IF_ERROR(expect_act("swiglu", "gate", gate));
  RETURN_IF_ERROR(expect_cuda("swiglu", "up", up));
  RETURN_IF_ERROR(expect_cuda("swiglu", "out", out));
  RETURN_IF_ERROR(expect_same("swiglu", "up", up, gate));
  RETURN_IF_ERROR(expect_same("swiglu", "out", out, gate));
  const int64_t n = gate.numel();
  if (n == 0) return Status::ok();
  constexpr int kThreads = 256;
  return dispatch_act(gate.dtype, "swiglu", [&](auto tag) {
    using T = decltype(tag);
    if (vec8_ok(n, {out.data, gate.data, up.data}))
      CUDA_RETURN_IF_ERROR(launch_kernel(swiglu_vec_kernel<T>, grid_for(n / 8, kThreads), kThreads, 0, stream,
                                         out.as<T>(), gate.as<T>(), up.as<T>(), n / 8));
    else
      CUDA_RETURN_IF_ERROR(launch_kernel(swiglu_kernel<T>, grid_for(n, kThreads), kThreads, 0, stream, out.as<T>(),
                                         gate.as<T>(), up.as<T>(), n));
    return Status::ok();
  });
}

}  // namespace compactor
