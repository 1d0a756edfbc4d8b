// Calibration statistics and Hessian preparation kernels (hessian_accumulate.cuh).
// Test: build-cuda/tests/test_cuda_gptq (on a GPU machine).
#include "backend/cuda/device_utils.cuh"
#include "backend/cuda/hessian_accumulate.cuh"

namespace compactor {

namespace {

constexpr int kAbsRows = 256;  // rows per thread of the |x| column sums

template <typename T>
__global__ void abs_sum_kernel(double* __restrict__ out,  // [K]
                               const T* __restrict__ x,   // [rows, K]
                               int64_t rows, int64_t k_in) {
  const int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (k >= k_in) return;
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * kAbsRows;
  const int64_t r1 = r0 + kAbsRows < rows ? r0 + kAbsRows : rows;
  double acc = 0;
  for (int64_t r = r0; r < r1; ++r) acc += fabs(static_cast<double>(to_f32(x[r * k_in + k])));
  atomicAdd(out + k, acc);
}

__global__ void hessian_permute_damp_kernel(float* __restrict__ hp,         // [K, K]
                                            const float* __restrict__ g,    // [K, K]
                                            float scale, const int32_t* __restrict__ perm, int64_t k_in,
                                            float damp) {
  const int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t i = blockIdx.y;
  if (j >= k_in) return;
  const int64_t r = perm[i];
  float v = __fmul_rn(g[r * k_in + perm[j]], scale);  // no fma with the damping: the host rounds H first
  if (i == j) v = (v == 0.f ? 1.f : v) + damp;
  hp[i * k_in + j] = v;
}

__global__ void symmetrize_lower_kernel(float* a, int64_t k_in) {
  const int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t i = blockIdx.y;
  if (j < i) a[i * k_in + j] = a[j * k_in + i];
}

cudaDataType cuda_type(DType d) {
  return d == DType::kBF16 ? CUDA_R_16BF : d == DType::kF16 ? CUDA_R_16F : CUDA_R_32F;
}

}  // namespace

Status gram_accumulate_cuda(cublasHandle_t cublas, View x, float* gram, double* abs_sum, cudaStream_t stream) {
  RETURN_IF_ERROR(expect_cuda("gram_accumulate", "x", x));
  if (x.dtype != DType::kF32 && x.dtype != DType::kF16 && x.dtype != DType::kBF16)
    return unsupported("gram_accumulate: x is {} (expected f32, f16 or bf16)", dtype_name(x.dtype));
  const int64_t rows = x.rows(), k = x.numel() / std::max<int64_t>(1, rows);
  if (rows == 0) return Status::ok();
  if (rows > INT32_MAX || k > INT32_MAX) return invalid_argument("gram_accumulate: x [{}, {}] is too large", rows, k);
  // Row-major X [rows, K] is column-major Xᵀ [K, rows]: G (K x K) += Xᵀ · (Xᵀ)ᵀ.
  const float one = 1.f;
  const int ki = static_cast<int>(k), ri = static_cast<int>(rows);
  CUBLAS_RETURN_IF_ERROR(cublasGemmEx(cublas, CUBLAS_OP_N, CUBLAS_OP_T, ki, ki, ri, &one, x.data, cuda_type(x.dtype), ki,
                                      x.data, cuda_type(x.dtype), ki, &one, gram, CUDA_R_32F, ki, CUBLAS_COMPUTE_32F,
                                      CUBLAS_GEMM_DEFAULT));
  if (abs_sum == nullptr) return Status::ok();
  constexpr int kThreads = 128;
  const dim3 grid(static_cast<unsigned>(ceil_div(k, kThreads)), static_cast<unsigned>(ceil_div(rows, kAbsRows)));
  switch (x.dtype) {
    case DType::kBF16: abs_sum_kernel<<<grid, kThreads, 0, stream>>>(abs_sum, x.as<__nv_bfloat16>(), rows, k); break;
    case DType::kF16: abs_sum_kernel<<<grid, kThreads, 0, stream>>>(abs_sum, x.as<__half>(), rows, k); break;
    default: abs_sum_kernel<<<grid, kThreads, 0, stream>>>(abs_sum, x.as<float>(), rows, k);
  }
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::ok();
}

Status hessian_permute_damp_cuda(float* hp, const float* g, float scale, const int32_t* perm, int64_t k, float damp,
                                 cudaStream_t stream) {
  if (k <= 0 || k > 65535) return invalid_argument("hessian_permute_damp: K = {} (expected 1..65535)", k);
  constexpr int kThreads = 256;
  hessian_permute_damp_kernel<<<dim3(static_cast<unsigned>(ceil_div(k, kThreads)), static_cast<unsigned>(k)), kThreads,
                                0, stream>>>(hp, g, scale, perm, k, damp);
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::ok();
}

Status symmetrize_lower_cuda(float* a, int64_t k, cudaStream_t stream) {
  if (k <= 0 || k > 65535) return invalid_argument("symmetrize_lower: K = {} (expected 1..65535)", k);
  constexpr int kThreads = 256;
  symmetrize_lower_kernel<<<dim3(static_cast<unsigned>(ceil_div(k, kThreads)), static_cast<unsigned>(k)), kThreads, 0,
                            stream>>>(a, k);
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::ok();
}

}  // namespace compactor
