// Quantization-grid kernels (gptq_grid.cuh): RTN with natural groups, one thread per (row, group);
// cast, difference and f64 dot product as grid-stride loops.
// Test: build-cuda/tests/test_cuda_gptq (on a GPU machine).
#include "backend/cuda/device_utils.cuh"
#include "backend/cuda/gptq_device.cuh"
#include "backend/cuda/gptq_grid.cuh"

namespace compactor {

namespace {

__global__ void quant_rtn_kernel(const float* __restrict__ w,      // [N, K]
                                 const uint8_t* __restrict__ dead, // [K] or nullptr
                                 int64_t n_out, int64_t k_in, int64_t width, int64_t groups, int bits, bool symmetric,
                                 float* __restrict__ scales,       // [N, G]
                                 float* __restrict__ zeros,        // [N, G]
                                 uint8_t* __restrict__ codes,      // [N, K] or nullptr
                                 float* __restrict__ deq) {        // [N, K] or nullptr
  const int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (idx >= n_out * groups) return;
  const int64_t n = idx / groups, g = idx % groups;
  const int64_t k0 = g * width, k1 = k0 + width < k_in ? k0 + width : k_in;
  const float* row = w + n * k_in;
  auto value = [&](int64_t k) { return dead != nullptr && dead[k] ? 0.f : row[k]; };
  float lo = value(k0), hi = lo;
  for (int64_t k = k0 + 1; k < k1; ++k) {
    const float v = value(k);
    lo = fminf(lo, v);
    hi = fmaxf(hi, v);
  }
  const DeviceQParams p = qparams_from_range_device(lo, hi, bits, symmetric);
  scales[idx] = p.scale;
  zeros[idx] = p.zero;
  if (codes == nullptr && deq == nullptr) return;
  const int max_code = (1 << bits) - 1;
  for (int64_t k = k0; k < k1; ++k) {
    const float c = quantize_code_device(value(k), p, max_code);
    if (codes != nullptr) codes[n * k_in + k] = static_cast<uint8_t>(c);
    if (deq != nullptr) deq[n * k_in + k] = dequantize_code_device(c, p);
  }
}

__device__ __forceinline__ void store_any(void* p, DType dtype, int64_t i, float v) {
  switch (dtype) {
    case DType::kBF16: static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v); break;
    case DType::kF16: static_cast<__half*>(p)[i] = __float2half_rn(v); break;
    default: static_cast<float*>(p)[i] = v;
  }
}

__global__ void cast_kernel(void* dst, DType dst_dtype, const void* src, DType src_dtype, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    store_any(dst, dst_dtype, i, load_any(src, src_dtype, i));
}

__global__ void sub_kernel(float* __restrict__ d, const float* __restrict__ a, const float* __restrict__ b, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    d[i] = b != nullptr ? a[i] - b[i] : a[i];
}

__global__ void dot_f64_kernel(double* out, const float* __restrict__ a, const float* __restrict__ b, int64_t n) {
  double acc = 0;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    acc += static_cast<double>(a[i]) * static_cast<double>(b[i]);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  if ((threadIdx.x & 31) == 0) atomicAdd(out, acc);
}

bool is_float(DType d) { return d == DType::kF32 || d == DType::kF16 || d == DType::kBF16; }

}  // namespace

Status quant_rtn_cuda(const float* w, const uint8_t* dead, int64_t n, int64_t k, const QuantSpec& spec, float* scales,
                      float* zeros, uint8_t* codes, float* deq, cudaStream_t stream) {
  if (n <= 0 || k <= 0) return invalid_argument("quant_rtn: empty weight [{}, {}]", n, k);
  if (spec.bits < 2 || spec.bits > 8) return invalid_argument("quant_rtn: {} bits (expected 2..8)", spec.bits);
  if (spec.group_size < 0 || (spec.group_size > 0 && k % spec.group_size != 0))
    return invalid_argument("quant_rtn: group size {} does not divide K = {}", spec.group_size, k);
  const int64_t width = spec.group_size == 0 ? k : spec.group_size, groups = k / width;
  constexpr int kThreads = 128;
  const int64_t total = n * groups;
  quant_rtn_kernel<<<static_cast<unsigned>(ceil_div(total, kThreads)), kThreads, 0, stream>>>(
      w, dead, n, k, width, groups, spec.bits, spec.symmetric, scales, zeros, codes, deq);
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::ok();
}

Status cast_cuda(View dst, View src, cudaStream_t stream) {
  RETURN_IF_ERROR(expect_cuda("cast", "dst", dst));
  RETURN_IF_ERROR(expect_cuda("cast", "src", src));
  if (dst.numel() != src.numel())
    return invalid_argument("cast: dst has {} elements, src {}", dst.numel(), src.numel());
  if (!is_float(dst.dtype) || !is_float(src.dtype))
    return unsupported("cast: {} -> {} (expected f32, f16 or bf16)", dtype_name(src.dtype), dtype_name(dst.dtype));
  if (dst.numel() == 0) return Status::ok();
  constexpr int kThreads = 256;
  cast_kernel<<<grid_for(dst.numel(), kThreads), kThreads, 0, stream>>>(dst.data, dst.dtype, src.data, src.dtype,
                                                                          dst.numel());
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::ok();
}

Status sub_f32_cuda(float* d, const float* a, const float* b, int64_t n, cudaStream_t stream) {
  if (n <= 0) return Status::ok();
  constexpr int kThreads = 256;
  sub_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(d, a, b, n);
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::ok();
}

Status dot_f64_cuda(double* out, const float* a, const float* b, int64_t n, cudaStream_t stream) {
  CUDA_RETURN_IF_ERROR(cudaMemsetAsync(out, 0, sizeof(double), stream));
  if (n <= 0) return Status::ok();
  constexpr int kThreads = 256;
  const int64_t blocks = std::min<int64_t>(ceil_div(n, kThreads), 4096);
  dot_f64_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(out, a, b, n);
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::ok();
}

}  // namespace compactor
