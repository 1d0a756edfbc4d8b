// Random 32-bit words (fill_words.h): one grid-stride pass, each word drawn from its own index.
// Test: build-*/tests/test_cuda_synthetic_quant (on a GPU machine).
#include "backend/cuda/common.cuh"
#include "backend/cuda/device_utils.cuh"
#include "backend/cuda/fill_words.h"

namespace compactor {

namespace {

__host__ __device__ __forceinline__ uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

__global__ void fill_words_kernel(uint32_t* __restrict__ out,  // [n]
                                  int64_t n, uint64_t key) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = static_cast<uint32_t>(splitmix64(key ^ static_cast<uint64_t>(i)));
}

}  // namespace

Status fill_random_words_cuda(View out, uint64_t stream_id, CUstream_st* stream) {
  RETURN_IF_ERROR(expect_cuda("fill_random_words", "out", out));
  if (dtype_size(out.dtype) != 4)
    return invalid_argument("fill_random_words: dtype {} is not a 4-byte type", dtype_name(out.dtype));
  const int64_t n = out.numel();
  if (n == 0) return Status::ok();
  constexpr int kThreads = 256;
  fill_words_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(static_cast<uint32_t*>(out.data), n,
                                                                     splitmix64(stream_id));
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::ok();
}

}  // namespace compactor
