// The GPTQ column sweep kernels (gptq_sweep.cuh). The block kernel keeps one output row per thread
// with the block's rows of its column in shared memory; the work per block is 128²/2 multiply-adds
// per row, small next to the lazy-update GEMM the caller runs.
// gather/scatter are 32x32 shared-memory transposes with the column permutation on the K side.
// Test: build-cuda/tests/test_cuda_gptq (on a GPU machine).
#include "backend/cuda/device_utils.cuh"
#include "backend/cuda/gptq_device.cuh"
#include "backend/cuda/gptq_sweep.cuh"

namespace compactor {

namespace {

constexpr int kTile = 32, kTileRows = 8;

__global__ void gptq_gather_kernel(float* __restrict__ wt,           // [K, N]
                                   const float* __restrict__ w,      // [N, K]
                                   const int32_t* __restrict__ perm, // [K]
                                   const uint8_t* __restrict__ dead, // [K] or nullptr
                                   int64_t n_out, int64_t k_in) {
  __shared__ float tile[kTile][kTile + 1];
  const int64_t p0 = static_cast<int64_t>(blockIdx.x) * kTile, n0 = static_cast<int64_t>(blockIdx.y) * kTile;
  const int64_t p = p0 + threadIdx.x;
  for (int r = threadIdx.y; r < kTile; r += kTileRows) {
    const int64_t n = n0 + r;
    float v = 0.f;
    if (p < k_in && n < n_out) {
      const int32_t col = perm[p];
      v = dead != nullptr && dead[col] ? 0.f : w[n * k_in + col];
    }
    tile[r][threadIdx.x] = v;
  }
  __syncthreads();
  const int64_t n = n0 + threadIdx.x;
  for (int r = threadIdx.y; r < kTile; r += kTileRows) {
    const int64_t pp = p0 + r;
    if (pp < k_in && n < n_out) wt[pp * n_out + n] = tile[threadIdx.x][r];
  }
}

__global__ void gptq_scatter_kernel(float* __restrict__ w_hat,            // [N, K]
                                    uint8_t* __restrict__ codes,          // [N, K]
                                    const float* __restrict__ wt,         // [K, N]
                                    const uint8_t* __restrict__ codes_t,  // [K, N]
                                    const int32_t* __restrict__ perm,     // [K]
                                    int64_t n_out, int64_t k_in) {
  __shared__ float tile[kTile][kTile + 1];
  __shared__ uint8_t ctile[kTile][kTile + 1];
  const int64_t p0 = static_cast<int64_t>(blockIdx.x) * kTile, n0 = static_cast<int64_t>(blockIdx.y) * kTile;
  const int64_t n = n0 + threadIdx.x;
  for (int r = threadIdx.y; r < kTile; r += kTileRows) {
    const int64_t p = p0 + r;
    const bool in = p < k_in && n < n_out;
    tile[r][threadIdx.x] = in ? wt[p * n_out + n] : 0.f;
    ctile[r][threadIdx.x] = in ? codes_t[p * n_out + n] : 0;
  }
  __syncthreads();
  const int64_t p = p0 + threadIdx.x;
  if (p >= k_in) return;
  const int64_t col = perm[p];
  for (int r = threadIdx.y; r < kTile; r += kTileRows) {
    const int64_t nn = n0 + r;
    if (nn >= n_out) continue;
    w_hat[nn * k_in + col] = tile[threadIdx.x][r];
    codes[nn * k_in + col] = ctile[threadIdx.x][r];
  }
}

// One thread per output row n; the columns of the block in sweep order (see gptq_sweep.cuh).
// kShared: the block's rows of this thread's column live in shared memory, tile[j - i1][tid]
// (each thread touches only its own slots: no barriers), loaded at the start and stored at the end,
// so the p -> p+1 dependency and the in-block updates cost shared-memory latency, not L2's. Without
// it (blocks too wide for 48 KB of shared memory) the same code works on wt in global memory.
template <bool kShared>
__global__ void gptq_block_kernel(GptqBlockArgs a) {
  extern __shared__ float tile[];  // kShared: [i2 - i1][blockDim.x]
  const int64_t n = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (n >= a.n) return;
  const int64_t N = a.n, K = a.k, gs = a.spec.group_size;
  const int64_t groups = gs == 0 ? 1 : K / gs;
  const int max_code = (1 << a.spec.bits) - 1;
  const int64_t tid = threadIdx.x, threads = blockDim.x;
  // The current value of row r (r >= i1) of this thread's column.
  auto cur = [&](int64_t r) -> float& { return kShared && r < a.i2 ? tile[(r - a.i1) * threads + tid] : a.wt[r * N + n]; };
  if (kShared)
    for (int64_t r = a.i1; r < a.i2; ++r) tile[(r - a.i1) * threads + tid] = a.wt[r * N + n];
  DeviceQParams qp{1.f, 0.f};
  for (int64_t p = a.i1; p < a.i2; ++p) {
    if (a.static_groups) {
      const int64_t g = a.perm[p] / gs;
      qp = DeviceQParams{a.scales[n * groups + g], a.zeros[n * groups + g]};
    } else {
      const int64_t width = gs == 0 ? K : gs, g = gs == 0 ? 0 : p / gs;
      if (p % width == 0) {
        // The group's grid from its current rows (error feedback of every earlier column applied).
        const int64_t end = p + width < K ? p + width : K;
        float lo = cur(p), hi = lo;
        for (int64_t r = p + 1; r < end; ++r) {
          const float v = cur(r);
          lo = fminf(lo, v);
          hi = fmaxf(hi, v);
        }
        qp = qparams_from_range_device(lo, hi, a.spec.bits, a.spec.symmetric);
        a.scales[n * groups + g] = qp.scale;
        a.zeros[n * groups + g] = qp.zero;
      } else if (p == a.i1) {
        qp = DeviceQParams{a.scales[n * groups + g], a.zeros[n * groups + g]};  // set by an earlier block
      }
    }
    const float w = cur(p);
    const float code = quantize_code_device(w, qp, max_code);
    const float q = dequantize_code_device(code, qp);
    a.codes_t[p * N + n] = static_cast<uint8_t>(code);
    cur(p) = q;
    const float* urow = a.u + p * K;
    const float e = __fdiv_rn(w - q, urow[p]);
    a.err[(p - a.i1) * N + n] = e;
    for (int64_t j = p + 1; j < a.i2; ++j) cur(j) -= urow[j] * e;
  }
  if (kShared)
    for (int64_t r = a.i1; r < a.i2; ++r) a.wt[r * N + n] = tile[(r - a.i1) * threads + tid];
}

dim3 transpose_grid(int64_t n, int64_t k) {
  return dim3(static_cast<unsigned>(ceil_div(k, kTile)), static_cast<unsigned>(ceil_div(n, kTile)));
}

}  // namespace

Status gptq_gather_cuda(float* wt, const float* w, const int32_t* perm, const uint8_t* dead, int64_t n, int64_t k,
                        cudaStream_t stream) {
  if (n <= 0 || k <= 0) return invalid_argument("gptq_gather: empty weight [{}, {}]", n, k);
  if (ceil_div(n, kTile) > 65535) return invalid_argument("gptq_gather: N = {} rows is too many", n);
  gptq_gather_kernel<<<transpose_grid(n, k), dim3(kTile, kTileRows), 0, stream>>>(wt, w, perm, dead, n, k);
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::ok();
}

Status gptq_block_cuda(const GptqBlockArgs& a, cudaStream_t stream) {
  if (a.n <= 0 || a.k <= 0 || a.i1 < 0 || a.i2 > a.k || a.i1 >= a.i2)
    return invalid_argument("gptq_block: block [{}, {}) of K = {} (N = {})", a.i1, a.i2, a.k, a.n);
  if (a.spec.bits < 2 || a.spec.bits > 8) return invalid_argument("gptq_block: {} bits (expected 2..8)", a.spec.bits);
  if (a.spec.group_size < 0 || (a.spec.group_size > 0 && a.k % a.spec.group_size != 0))
    return invalid_argument("gptq_block: group size {} does not divide K = {}", a.spec.group_size, a.k);
  if (a.static_groups && a.spec.group_size == 0) return invalid_argument("gptq_block: static groups need a group size");
  // Small thread blocks (N/64 of them) spread the rows over the SMs; the block's rows go to shared
  // memory when they fit in the default 48 KB (block size <= 192 with 64 threads, <= 384 with 32).
  constexpr size_t kSharedLimit = 48 * 1024;
  const int64_t rows = a.i2 - a.i1;
  int threads = 64;
  if (static_cast<size_t>(rows) * threads * sizeof(float) > kSharedLimit) threads = 32;
  const size_t shared = static_cast<size_t>(rows) * threads * sizeof(float);
  const unsigned blocks = static_cast<unsigned>(ceil_div(a.n, threads));
  if (shared <= kSharedLimit) {
    gptq_block_kernel<true><<<blocks, threads, shared, stream>>>(a);
  } else {
    gptq_block_kernel<false><<<blocks, threads, 0, stream>>>(a);
  }
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::ok();
}

Status gptq_scatter_cuda(float* w_hat, uint8_t* codes, const float* wt, const uint8_t* codes_t, const int32_t* perm,
                         int64_t n, int64_t k, cudaStream_t stream) {
  if (n <= 0 || k <= 0) return invalid_argument("gptq_scatter: empty weight [{}, {}]", n, k);
  if (ceil_div(n, kTile) > 65535) return invalid_argument("gptq_scatter: N = {} rows is too many", n);
  gptq_scatter_kernel<<<transpose_grid(n, k), dim3(kTile, kTileRows), 0, stream>>>(w_hat, codes, wt, codes_t, perm, n,
                                                                                    k);
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::ok();
}

}  // namespace compactor
