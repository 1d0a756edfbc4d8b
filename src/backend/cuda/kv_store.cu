// KV append: a dtype-agnostic row copy. blockIdx.x is the source row, blockIdx.y picks k or v;
// rows move in 16-byte words when sizes and pointers allow, else in narrower words.
// Test: build-cuda/tests/test_cuda_ops --gtest_filter='*KvStore*' (on a GPU machine).
#include "backend/cuda/device_utils.cuh"
#include "backend/cuda/kv_store.cuh"
#include "backend/cuda/launch.cuh"

namespace compactor {

template <typename Word>
__global__ void kv_store_kernel(Word* __restrict__ k_cache,        // [B, S_max, W]
                                Word* __restrict__ v_cache,        // [B, S_max, W]
                                const Word* __restrict__ k,        // [B*T, W]
                                const Word* __restrict__ v,        // [B*T, W]
                                const int32_t* __restrict__ past,  // [B]
                                int tokens, int64_t s_max, int64_t words_per_row) {
  wait_for_prior_grids();
  const int64_t row = blockIdx.x;
  const int64_t b = row / tokens, t = row % tokens;
  const int64_t dst_row = b * s_max + past[b] + t;
  const Word* src = (blockIdx.y == 0 ? k : v) + row * words_per_row;
  Word* dst = (blockIdx.y == 0 ? k_cache : v_cache) + dst_row * words_per_row;
  for (int64_t w = threadIdx.x; w < words_per_row; w += blockDim.x) dst[w] = src[w];
}

namespace {

Status check_kv_store(View k_cache, View v_cache, View k, View v, const DeviceBatch& batch) {
  RETURN_IF_ERROR(expect_cuda("kv_store", "k_cache", k_cache));
  RETURN_IF_ERROR(expect_cuda("kv_store", "v_cache", v_cache));
  RETURN_IF_ERROR(expect_cuda("kv_store", "k", k));
  RETURN_IF_ERROR(expect_cuda("kv_store", "v", v));
  RETURN_IF_ERROR(expect_same("kv_store", "v_cache", v_cache, k_cache));
  RETURN_IF_ERROR(expect_same("kv_store", "v", v, k));
  if (k.dtype != k_cache.dtype)
    return unsupported("kv_store: k is {} but the cache is {}", dtype_name(k.dtype), dtype_name(k_cache.dtype));
  if (k_cache.shape.ndim != 3 || k_cache.shape[0] != batch.batch || k_cache.shape[2] != k.cols())
    return invalid_argument("kv_store: cache {} does not match [B={}, S_max, {}]", k_cache.shape.str(), batch.batch,
                            k.cols());
  RETURN_IF_ERROR(expect_shape2("kv_store", "k", k, static_cast<int64_t>(batch.batch) * batch.tokens, k.cols()));
  for (int b = 0; b < batch.batch; ++b)
    if (batch.past_host[b] < 0 || batch.past_host[b] + batch.tokens > k_cache.shape[1])
      return invalid_argument("kv_store: sequence {} writes positions [{}, {}) but the cache holds {}", b,
                              batch.past_host[b], batch.past_host[b] + batch.tokens, k_cache.shape[1]);
  return Status::ok();
}

bool aligned(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

template <typename Word>
Status launch(View k_cache, View v_cache, View k, View v, const DeviceBatch& batch, cudaStream_t stream) {
  const int64_t row_bytes = k.cols() * dtype_size(k.dtype);
  const int64_t words = row_bytes / static_cast<int64_t>(sizeof(Word));
  const dim3 grid(static_cast<unsigned>(static_cast<int64_t>(batch.batch) * batch.tokens), 2);
  const int threads = words >= 128 ? 128 : 32;
  CUDA_RETURN_IF_ERROR(launch_kernel(kv_store_kernel<Word>, grid, threads, 0, stream, k_cache.as<Word>(),
                                     v_cache.as<Word>(), k.as<Word>(), v.as<Word>(), batch.past_dev, batch.tokens,
                                     k_cache.shape[1], words));
  return Status::ok();
}

}  // namespace

Status kv_store_cuda(View k_cache, View v_cache, View k, View v, const DeviceBatch& batch, cudaStream_t stream) {
  RETURN_IF_ERROR(check_kv_store(k_cache, v_cache, k, v, batch));
  const int64_t rows = static_cast<int64_t>(batch.batch) * batch.tokens;
  if (rows == 0 || k.cols() == 0) return Status::ok();
  if (rows > 0x7fffffff) return invalid_argument("kv_store: {} rows exceed one grid", rows);
  const int64_t row_bytes = k.cols() * dtype_size(k.dtype);
  auto all_aligned = [&](size_t n) {
    return row_bytes % static_cast<int64_t>(n) == 0 && aligned(k_cache.data, n) && aligned(v_cache.data, n) &&
           aligned(k.data, n) && aligned(v.data, n);
  };
  if (all_aligned(16)) return launch<uint4>(k_cache, v_cache, k, v, batch, stream);
  if (all_aligned(4)) return launch<uint32_t>(k_cache, v_cache, k, v, batch, stream);
  return launch<uint8_t>(k_cache, v_cache, k, v, batch, stream);
}

}  // namespace compactor
