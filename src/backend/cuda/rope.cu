// Rotate-half RoPE: one thread per (row, head, i < Dh/2) pair, rotating (x[i], x[i + Dh/2]) by
// the f32 angle float(pos) * inv_freq[i], pos = past(b) + t. sincosf (not the fast __sincosf)
// because angles reach thousands of radians at long positions.
// Test: build-cuda/tests/test_cuda_ops --gtest_filter='*Rope*' (on a GPU machine).
#include "backend/cuda/device_utils.cuh"
#include "backend/cuda/launch.cuh"
#include "backend/cuda/rope.cuh"

namespace compactor {

template <typename T>
__global__ void rope_kernel(T* x,                                // [B*T, n_heads*head_dim]
                            const float* __restrict__ inv_freq,  // [head_dim/2]
                            const int32_t* __restrict__ past,    // [B]
                            int64_t rows, int tokens, int n_heads, int head_dim) {
  wait_for_prior_grids();
  const int half = head_dim / 2;
  const int64_t pairs = rows * n_heads * half;
  for (int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; p < pairs;
       p += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int i = static_cast<int>(p % half);
    const int64_t row_head = p / half;
    const int64_t row = row_head / n_heads;
    const int head = static_cast<int>(row_head % n_heads);
    const int pos = past[row / tokens] + static_cast<int>(row % tokens);
    float s, c;
    sincosf(static_cast<float>(pos) * inv_freq[i], &s, &c);
    T* h = x + row * n_heads * head_dim + static_cast<int64_t>(head) * head_dim;
    const float x1 = to_f32(h[i]), x2 = to_f32(h[i + half]);
    h[i] = from_f32<T>(x1 * c - x2 * s);
    h[i + half] = from_f32<T>(x2 * c + x1 * s);
  }
}

// 16-byte version: a thread rotates 8 consecutive pairs (i .. i+7 with i + half .. i + half + 7).
template <typename T>
__global__ void rope_vec_kernel(T* x,                                // [B*T, n_heads*head_dim]
                                const float* __restrict__ inv_freq,  // [head_dim/2]
                                const int32_t* __restrict__ past,    // [B]
                                int64_t rows, int tokens, int n_heads, int head_dim) {
  wait_for_prior_grids();
  const int half = head_dim / 2, vecs = half / 8;
  const int64_t total = rows * n_heads * vecs;
  for (int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; p < total;
       p += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int i = static_cast<int>(p % vecs) * 8;
    const int64_t row_head = p / vecs;
    const int64_t row = row_head / n_heads;
    const int head = static_cast<int>(row_head % n_heads);
    const int pos = past[row / tokens] + static_cast<int>(row % tokens);
    T* h = x + row * n_heads * head_dim + static_cast<int64_t>(head) * head_dim;
    float x1[8], x2[8], y1[8], y2[8];
    load8(h + i, x1);
    load8(h + i + half, x2);
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      float s, c;
      sincosf(static_cast<float>(pos) * inv_freq[i + e], &s, &c);
      y1[e] = x1[e] * c - x2[e] * s;
      y2[e] = x2[e] * c + x1[e] * s;
    }
    store8(h + i, y1);
    store8(h + i + half, y2);
  }
}

Status rope_cuda(View x, int n_heads, int head_dim, const float* inv_freq_dev, const DeviceBatch& batch,
                 cudaStream_t stream) {
  RETURN_IF_ERROR(expect_act("rope", "x", x));
  if (n_heads <= 0 || head_dim <= 0 || head_dim % 2 != 0)
    return invalid_argument("rope: need n_heads > 0 and an even head_dim, got {} and {}", n_heads, head_dim);
  const int64_t rows = static_cast<int64_t>(batch.batch) * batch.tokens;
  RETURN_IF_ERROR(expect_shape2("rope", "x", x, rows, static_cast<int64_t>(n_heads) * head_dim));
  if (rows == 0) return Status::ok();
  constexpr int kThreads = 256;
  const int64_t pairs = rows * n_heads * (head_dim / 2);
  return dispatch_act(x.dtype, "rope", [&](auto tag) {
    using T = decltype(tag);
    if (vec8_ok(head_dim / 2, {x.data}))
      CUDA_RETURN_IF_ERROR(launch_kernel(rope_vec_kernel<T>, grid_for(pairs / 8, kThreads), kThreads, 0, stream,
                                         x.as<T>(), inv_freq_dev, batch.past_dev, rows, batch.tokens, n_heads,
                                         head_dim));
    else
      CUDA_RETURN_IF_ERROR(launch_kernel(rope_kernel<T>, grid_for(pairs, kThreads), kThreads, 0, stream, x.as<T>(),
                                         inv_freq_dev, batch.past_dev, rows, batch.tokens, n_heads, head_dim));
    return Status::ok();
  });
}

}  // namespace compactor
