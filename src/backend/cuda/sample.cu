// GPU sampling: one 1024-thread block per row. Greedy is one arg-max pass. Sampling makes ~70
// passes over the row (max, 32 bisection steps per filter, the kept mass, one prefix scan), all
// hitting L1/L2: a row is at most a few hundred KB, and this runs once per decode step.
// Test: build-cuda/tests/test_cuda_ops --gtest_filter='*Sample*' (on a GPU machine).
#include <climits>

#include "backend/cuda/device_utils.cuh"
#include "backend/cuda/launch.cuh"
#include "backend/cuda/sample.cuh"

namespace compactor {

namespace {

constexpr int kThreads = 1024;

__device__ __forceinline__ uint64_t mix64_dev(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Order-preserving map of a float to uint32 (NaN mapped as -inf).
__device__ __forceinline__ uint32_t order_key(float f) {
  if (f != f) f = -INFINITY;
  const uint32_t b = __float_as_uint(f);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

__device__ __forceinline__ float block_max(float v) {
  __shared__ float partial[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = lane < (blockDim.x >> 5) ? partial[lane] : -INFINITY;
  return warp_max(v);
}

// Exclusive prefix sum over the block (threads in order); *total gets the block's sum.
__device__ __forceinline__ float block_exclusive_scan(float v, float* total) {
  __shared__ float warp_sums[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  float inc = v;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const float n = __shfl_up_sync(0xffffffffu, inc, o);
    if (lane >= o) inc += n;
  }
  __syncthreads();
  if (lane == 31) warp_sums[warp] = inc;
  __syncthreads();
  if (warp == 0) {
    float w = lane < warps ? warp_sums[lane] : 0.f, winc = w;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const float n = __shfl_up_sync(0xffffffffu, winc, o);
      if (lane >= o) winc += n;
    }
    if (lane < warps) warp_sums[lane] = winc - w;  // exclusive prefix of each warp
    if (lane == warps - 1) warp_sums[31] = winc;   // the block total (warps <= 31 here)
  }
  __syncthreads();
  *total = warp_sums[31];
  return warp_sums[warp] + inc - v;
}

template <typename T>
__global__ void __launch_bounds__(kThreads) sample_greedy_kernel(int32_t* __restrict__ ids, const T* __restrict__ logits,
                                                                 int64_t vocab, const int32_t* __restrict__ step,
                                                                 int32_t* __restrict__ history, int64_t history_stride) {
  wait_for_prior_grids();
  __shared__ float best_v[32];
  __shared__ int32_t best_i[32];
  const T* row = logits + blockIdx.x * vocab;
  float bv = -INFINITY;
  int32_t bi = INT_MAX;
  for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) {
    float v = to_f32(row[i]);
    if (v != v) v = -INFINITY;
    if (v > bv || (v == bv && i < bi)) bv = v, bi = static_cast<int32_t>(i);
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
    const int32_t oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (ov > bv || (ov == bv && oi < bi)) bv = ov, bi = oi;
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) best_v[warp] = bv, best_i[warp] = bi;
  __syncthreads();
  if (threadIdx.x != 0) return;
  for (int w = 1; w < static_cast<int>(blockDim.x >> 5); ++w)
    if (best_v[w] > bv || (best_v[w] == bv && best_i[w] < bi)) bv = best_v[w], bi = best_i[w];
  if (bi == INT_MAX) bi = 0;  // an all-NaN row
  ids[blockIdx.x] = bi;
  const int s = step != nullptr ? *step : 0;
  if (history != nullptr && s >= 0 && s < history_stride) history[blockIdx.x * history_stride + s] = bi;
}

template <typename T>
struct Row {
  const T* p;
  float inv_temp;
  __device__ float z(int64_t i) const { return to_f32(p[i]) * inv_temp; }
};

// Largest threshold t (an order key) with pred(t) true, pred monotone non-increasing in t.
template <typename Pred>
__device__ uint32_t bisect_keys(Pred pred) {
  uint32_t t = 0;
  for (int bit = 31; bit >= 0; --bit) {
    const uint32_t cand = t | (1u << bit);
    if (pred(cand)) t = cand;
  }
  return t;
}

template <typename T>
__global__ void __launch_bounds__(kThreads) sample_kernel(int32_t* __restrict__ ids, const T* __restrict__ logits,
                                                          int64_t vocab, SampleParams p, const int32_t* __restrict__ step,
                                                          int32_t* __restrict__ history, int64_t history_stride) {
  wait_for_prior_grids();
  __shared__ int32_t chosen;
  const Row<T> row{logits + blockIdx.x * vocab, 1.f / p.temperature};
  float mx = -INFINITY;
  for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) mx = fmaxf(mx, row.z(i));
  mx = block_max(mx);
  // Mass of the elements whose key is >= t (exp relative to the max, so the top element is 1).
  auto mass = [&](uint32_t t) {
    float s = 0.f;
    for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) {
      const float z = row.z(i);
      if (order_key(z) >= t) s += exp2f((z - mx) * 1.4426950408889634f);
    }
    return block_sum(s);
  };
  uint32_t thr = 0;
  if (p.top_k > 0 && p.top_k < vocab) {
    thr = bisect_keys([&](uint32_t t) {
      float c = 0.f;  // counts up to 2^24 are exact in f32
      for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) c += order_key(row.z(i)) >= t ? 1.f : 0.f;
      return block_sum(c) >= static_cast<float>(p.top_k);
    });
  }
  if (p.top_p < 1.f) {
    const float target = p.top_p * mass(thr);
    const uint32_t tp = bisect_keys([&](uint32_t t) { return mass(t > thr ? t : thr) >= target; });
    thr = tp > thr ? tp : thr;
  }
  // Draw u in [0, kept mass) and find it in a prefix scan over contiguous chunks (id order).
  const int s = step != nullptr ? *step : 0;
  const uint64_t r = mix64_dev(mix64_dev(p.seed) ^ ((static_cast<uint64_t>(static_cast<uint32_t>(s)) << 32) | blockIdx.x));
  const int64_t chunk = (vocab + blockDim.x - 1) / blockDim.x;
  const int64_t begin = threadIdx.x * chunk, end = begin + chunk < vocab ? begin + chunk : vocab;
  float local = 0.f;
  int32_t last_kept = -1;
  for (int64_t i = begin; i < end; ++i) {
    const float z = row.z(i);
    if (order_key(z) >= thr) local += exp2f((z - mx) * 1.4426950408889634f), last_kept = static_cast<int32_t>(i);
  }
  if (threadIdx.x == 0) chosen = INT_MAX;
  float total = 0.f;
  const float prefix = block_exclusive_scan(local, &total);  // its barriers also publish `chosen`
  const float u = static_cast<float>(r >> 40) * (1.f / 16777216.f) * total;
  if (u >= prefix && u - prefix < local) {
    float cum = 0.f;
    for (int64_t i = begin; i < end; ++i) {
      const float z = row.z(i);
      if (order_key(z) < thr) continue;
      cum += exp2f((z - mx) * 1.4426950408889634f);
      if (u - prefix < cum) {
        atomicMin(&chosen, static_cast<int32_t>(i));
        break;
      }
    }
  }
  // Rounding can leave u past the last interval: fall back to the last kept id.
  const float last = block_max(static_cast<float>(last_kept));  // ids < 2^24 are exact in f32
  if (threadIdx.x != 0) return;
  const int32_t id = chosen != INT_MAX ? chosen : static_cast<int32_t>(last < 0.f ? 0.f : last);
  ids[blockIdx.x] = id;
  if (history != nullptr && s >= 0 && s < history_stride) history[blockIdx.x * history_stride + s] = id;
}

__global__ void decode_advance_kernel(int32_t* __restrict__ past, int batch, int32_t* __restrict__ step) {
  wait_for_prior_grids();
  for (int b = threadIdx.x; b < batch; b += blockDim.x) past[b] += 1;
  if (threadIdx.x == 0 && step != nullptr) *step += 1;
}

}  // namespace

Status sample_cuda(int32_t* ids, View logits, const SampleParams& p, const int32_t* step, int32_t* history,
                   int64_t history_stride, cudaStream_t stream) {
  RETURN_IF_ERROR(expect_act("sample", "logits", logits));
  if (ids == nullptr) return invalid_argument("sample: ids is null");
  const int64_t rows = logits.rows(), vocab = logits.cols();
  if (vocab <= 0 || vocab >= (1 << 24)) return invalid_argument("sample: vocabulary {} outside [1, 2^24)", vocab);
  if (rows == 0) return Status::ok();
  if (rows > 65535) return invalid_argument("sample: {} rows exceed one grid", rows);
  if (!(p.temperature >= 0.f) || !(p.top_p > 0.f && p.top_p <= 1.f) || p.top_k < 0)
    return invalid_argument("sample: temperature {} must be >= 0, top_p {} in (0, 1], top_k {} >= 0", p.temperature,
                            p.top_p, p.top_k);
  if (history != nullptr && history_stride <= 0) return invalid_argument("sample: history stride must be > 0");
  return dispatch_act(logits.dtype, "sample", [&](auto tag) {
    using T = decltype(tag);
    if (p.temperature == 0.f)
      CUDA_RETURN_IF_ERROR(launch_kernel(sample_greedy_kernel<T>, static_cast<unsigned>(rows), kThreads, 0, stream, ids,
                                         logits.as<T>(), vocab, step, history, history_stride));
    else
      CUDA_RETURN_IF_ERROR(launch_kernel(sample_kernel<T>, static_cast<unsigned>(rows), kThreads, 0, stream, ids,
                                         logits.as<T>(), vocab, p, step, history, history_stride));
    return Status::ok();
  });
}

Status decode_advance_cuda(int32_t* past, int batch, int32_t* step, cudaStream_t stream) {
  if (past == nullptr || batch <= 0) return invalid_argument("decode_advance: past is null or batch {} <= 0", batch);
  CUDA_RETURN_IF_ERROR(launch_kernel(decode_advance_kernel, 1, 128, 0, stream, past, batch, step));
  return Status::ok();
}

}  // namespace compactor
