// Cross-entropy: one block per row, one pass over the logits with an online (max, sum of exp)
// pair per thread (Milakov & Gimelshein 2018), merged across the block; all in f32.
// Test: build-cuda/tests/test_cuda_ops --gtest_filter='*CrossEntropy*' (on a GPU machine).
#include <cmath>

#include "backend/cuda/cross_entropy.cuh"
#include "backend/cuda/device_utils.cuh"

namespace compactor {

namespace {

struct MaxSum {
  float m, s;  // running max and sum of exp(x - m)
};

__device__ __forceinline__ MaxSum merge(MaxSum a, MaxSum b) {
  const float m = fmaxf(a.m, b.m);
  if (m == -INFINITY) return {m, 0.f};
  return {m, a.s * expf(a.m - m) + b.s * expf(b.m - m)};
}

// Adds one logit with a single exp: only a new maximum rescales the running sum.
__device__ __forceinline__ MaxSum push(MaxSum a, float x) {
  if (x == -INFINITY) return a;
  if (x <= a.m) return {a.m, a.s + expf(x - a.m)};
  return {x, a.s * expf(a.m - x) + 1.f};
}

}  // namespace

template <typename T>
__global__ void cross_entropy_kernel(float* __restrict__ nll,            // [T]
                                     const T* __restrict__ logits,       // [T, V]
                                     const int32_t* __restrict__ targets,  // [T]
                                     int64_t vocab) {
  __shared__ MaxSum partial[32];
  const T* row = logits + static_cast<int64_t>(blockIdx.x) * vocab;
  MaxSum acc{-INFINITY, 0.f};
  for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) acc = push(acc, to_f32(row[i]));
  for (int o = 16; o > 0; o >>= 1)
    acc = merge(acc, MaxSum{__shfl_xor_sync(0xffffffffu, acc.m, o), __shfl_xor_sync(0xffffffffu, acc.s, o)});
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) partial[warp] = acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    MaxSum total = partial[0];
    for (int w = 1; w < static_cast<int>(blockDim.x >> 5); ++w) total = merge(total, partial[w]);
    nll[blockIdx.x] = total.m + logf(total.s) - to_f32(row[targets[blockIdx.x]]);
  }
}

Status cross_entropy_cuda(float* nll_dev, View logits, const int32_t* targets_dev, cudaStream_t stream) {
  RETURN_IF_ERROR(expect_act("cross_entropy", "logits", logits));
  const int64_t rows = logits.rows(), vocab = logits.cols();
  if (rows == 0) return Status::ok();
  if (vocab <= 0) return invalid_argument("cross_entropy: logits {} have no vocabulary", logits.shape.str());
  if (rows > 0x7fffffff) return invalid_argument("cross_entropy: {} rows exceed one grid", rows);
  const int threads = vocab >= 8192 ? 1024 : 256;
  return dispatch_act(logits.dtype, "cross_entropy", [&](auto tag) {
    using T = decltype(tag);
    cross_entropy_kernel<T><<<static_cast<unsigned>(rows), threads, 0, stream>>>(nll_dev, logits.as<T>(), targets_dev,
                                                                                 vocab);
    CUDA_RETURN_IF_ERROR(cudaGetLastError());
    return Status::ok();
  });
}

}  // namespace compactor
