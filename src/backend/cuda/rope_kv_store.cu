// Fused RoPE(q), RoPE(k) and KV append (see rope_kv_store.cuh).
// Test: build-cuda/tests/test_cuda_ops --gtest_filter='*RopeKvStore*' (on a GPU machine).
#include "backend/cuda/device_utils.cuh"
#include "backend/cuda/launch.cuh"
#include "backend/cuda/rope_kv_store.cuh"

namespace compactor {

namespace {

struct RopeKvArgs {
  void* q;              // [rows, H*Dh]
  void* k;              // [rows, Hkv*Dh]
  const void* v;        // [rows, Hkv*Dh]
  void* k_cache;        // [B, S_max, Hkv*Dh]
  void* v_cache;        // [B, S_max, Hkv*Dh]
  const float* inv_freq;  // [Dh/2]
  const int32_t* past;    // [B]
  int64_t rows, s_max;
  int tokens, heads, kv_heads, head_dim;
};

}  // namespace

template <typename T>
__global__ void rope_kv_store_kernel(const RopeKvArgs a) {
  wait_for_prior_grids();
  const int dh = a.head_dim, half = dh / 2, rvecs = half / 8, vvecs = dh / 8;
  const int all_heads = a.heads + a.kv_heads;
  const int64_t rope_units = a.rows * all_heads * rvecs;
  const int64_t total = rope_units + a.rows * a.kv_heads * vvecs;
  for (int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; p < total;
       p += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    if (p < rope_units) {
      const int i = static_cast<int>(p % rvecs) * 8;
      const int64_t row_head = p / rvecs, row = row_head / all_heads;
      const int head = static_cast<int>(row_head % all_heads);
      const int64_t b = row / a.tokens;
      const int pos = a.past[b] + static_cast<int>(row % a.tokens);
      const bool is_k = head >= a.heads;
      const int kh = head - a.heads;
      T* h = is_k ? static_cast<T*>(a.k) + (row * a.kv_heads + kh) * dh : static_cast<T*>(a.q) + (row * a.heads + head) * dh;
      float x1[8], x2[8], y1[8], y2[8];
      load8(h + i, x1);
      load8(h + i + half, x2);
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        float s, c;
        sincosf(static_cast<float>(pos) * a.inv_freq[i + e], &s, &c);
        y1[e] = x1[e] * c - x2[e] * s;
        y2[e] = x2[e] * c + x1[e] * s;
      }
      store8(h + i, y1);
      store8(h + i + half, y2);
      if (is_k) {
        T* dst = static_cast<T*>(a.k_cache) + ((b * a.s_max + pos) * a.kv_heads + kh) * dh;
        store8(dst + i, y1);
        store8(dst + i + half, y2);
      }
    } else {
      const int64_t u = p - rope_units;
      const int c = static_cast<int>(u % vvecs) * 8;
      const int64_t row_head = u / vvecs, row = row_head / a.kv_heads;
      const int kh = static_cast<int>(row_head % a.kv_heads);
      const int64_t b = row / a.tokens;
      const int pos = a.past[b] + static_cast<int>(row % a.tokens);
      const uint4* src = reinterpret_cast<const uint4*>(static_cast<const T*>(a.v) + (row * a.kv_heads + kh) * dh + c);
      *reinterpret_cast<uint4*>(static_cast<T*>(a.v_cache) + ((b * a.s_max + pos) * a.kv_heads + kh) * dh + c) = *src;
    }
  }
}

bool rope_kv_store_supported(View q, View k, View v, View k_cache, View v_cache, int head_dim) {
  if (head_dim <= 0 || head_dim % 16 != 0) return false;
  for (const View* t : {&k, &v, &k_cache, &v_cache})
    if (t->dtype != q.dtype) return false;
  return vec8_ok(head_dim / 2, {q.data, k.data, v.data, k_cache.data, v_cache.data});
}

Status rope_kv_store_cuda(View q, View k, View v, View k_cache, View v_cache, int heads, int kv_heads, int head_dim,
                          const float* inv_freq_dev, const DeviceBatch& batch, cudaStream_t stream) {
  for (const auto& [name, t] : {std::pair<const char*, const View*>{"q", &q}, {"k", &k}, {"v", &v},
                                {"k_cache", &k_cache}, {"v_cache", &v_cache}})
    RETURN_IF_ERROR(expect_act("rope_kv_store", name, *t));
  if (!rope_kv_store_supported(q, k, v, k_cache, v_cache, head_dim) || heads <= 0 || kv_heads <= 0)
    return invalid_argument("rope_kv_store: unsupported H={} Hkv={} Dh={} (need Dh % 16 == 0, one dtype, aligned views)",
                            heads, kv_heads, head_dim);
  const int64_t rows = static_cast<int64_t>(batch.batch) * batch.tokens;
  RETURN_IF_ERROR(expect_shape2("rope_kv_store", "q", q, rows, static_cast<int64_t>(heads) * head_dim));
  RETURN_IF_ERROR(expect_shape2("rope_kv_store", "k", k, rows, static_cast<int64_t>(kv_heads) * head_dim));
  RETURN_IF_ERROR(expect_same("rope_kv_store", "v", v, k));
  RETURN_IF_ERROR(expect_same("rope_kv_store", "v_cache", v_cache, k_cache));
  if (k_cache.shape.ndim != 3 || k_cache.shape[0] != batch.batch || k_cache.shape[2] != k.cols())
    return invalid_argument("rope_kv_store: cache {} does not match [B={}, S_max, {}]", k_cache.shape.str(),
                            batch.batch, k.cols());
  for (int b = 0; b < batch.batch; ++b)
    if (batch.past_host[b] < 0 || batch.past_host[b] + batch.tokens > k_cache.shape[1])
      return invalid_argument("rope_kv_store: sequence {} writes positions [{}, {}) but the cache holds {}", b,
                              batch.past_host[b], batch.past_host[b] + batch.tokens, k_cache.shape[1]);
  if (rows == 0) return Status::ok();
  const RopeKvArgs args{q.data,       k.data,      v.data,           k_cache.data, v_cache.data, inv_freq_dev,
                        batch.past_dev, rows,      k_cache.shape[1], batch.tokens, heads,        kv_heads,
                        head_dim};
  const int64_t units = rows * (heads + kv_heads) * (head_dim / 16) + rows * kv_heads * (head_dim / 8);
  constexpr int kThreads = 256;
  return dispatch_act(q.dtype, "rope_kv_store", [&](auto tag) {
    using T = decltype(tag);
    CUDA_RETURN_IF_ERROR(launch_kernel(rope_kv_store_kernel<T>, grid_for(units, kThreads), kThreads, 0, stream, args));
    return Status::ok();
  });
}

}  // namespace compactor
