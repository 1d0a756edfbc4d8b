// Random fill: one grid-stride pass, each element drawn from its own index (no shared state).
// Test: build-cuda/tests/test_cuda_ops --gtest_filter='*FillNormal*' (on a GPU machine).
#include "backend/cuda/device_utils.cuh"
#include "backend/cuda/fill.cuh"

namespace compactor {

__device__ __forceinline__ uint64_t mix64_device(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

template <typename T>
__global__ void fill_normal_kernel(T* __restrict__ out,  // [n]
                                   int64_t n, uint64_t key, float mean, float stddev) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const uint64_t r = mix64_device(key ^ static_cast<uint64_t>(i));
    const float u1 = (static_cast<float>(r >> 40) + 1.f) * (1.f / 16777216.f);  // (0, 1]
    const float u2 = static_cast<float>((r >> 16) & 0xffffff) * (1.f / 16777216.f);
    const float z = sqrtf(-2.f * logf(u1)) * cospif(2.f * u2);
    out[i] = from_f32<T>(mean + stddev * z);
  }
}

Status fill_normal_cuda(View out, uint64_t stream_id, float mean, float stddev, cudaStream_t stream) {
  RETURN_IF_ERROR(expect_cuda("fill_normal", "out", out));
  const int64_t n = out.numel();
  if (n == 0) return Status::ok();
  constexpr int kThreads = 256;
  const uint64_t key = [&] {  // mix64 on the host, as fill_normal_host does
    uint64_t x = stream_id + 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
  }();
  auto launch = [&](auto* p) {
    using T = std::remove_pointer_t<decltype(p)>;
    fill_normal_kernel<T><<<grid_for(n, kThreads), kThreads, 0, stream>>>(p, n, key, mean, stddev);
    CUDA_RETURN_IF_ERROR(cudaGetLastError());
    return Status::ok();
  };
  switch (out.dtype) {
    case DType::kF32: return launch(out.as<float>());
    case DType::kBF16: return launch(out.as<__nv_bfloat16>());
    case DType::kF16: return launch(out.as<__half>());
    default: return unsupported("fill_normal: dtype {} is not f32, f16 or bf16", dtype_name(out.dtype));
  }
}

}  // namespace compactor
