// Dense matmul through cublasGemmEx. Row-major y[T,N] = x[T,K]·w[N,K]ᵀ is, in cuBLAS's
// column-major terms, yᵀ[N,T] = op_T(w as [K,N], ld K) · (xᵀ as [K,T], ld K): the "TN" GEMM.
// A bias is written into y first and folded in with beta = 1, so y is rounded once.
// Test: build-cuda/tests/test_cuda_ops --gtest_filter='*Matmul*' (on a GPU machine).
#include <climits>

#include "backend/cuda/device_utils.cuh"
#include "backend/cuda/matmul.cuh"

namespace compactor {

template <typename T>
__global__ void matmul_bias_kernel(T* __restrict__ out,            // [T, N]
                                   const void* __restrict__ bias,  // [N] bias_dtype
                                   DType bias_dtype, int64_t rows, int64_t n) {
  const int64_t total = rows * n;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = from_f32<T>(load_any(bias, bias_dtype, i % n));
}

namespace {

Status check_matmul(View out, View x, const LinearWeight& w) {
  RETURN_IF_ERROR(expect_act("matmul", "x", x));
  RETURN_IF_ERROR(expect_cuda("matmul", "out", out));
  RETURN_IF_ERROR(expect_cuda("matmul", "weight", w.weight));
  if (!format_is_dense(w.format))
    return unsupported("matmul: weight format {} has no CUDA kernel yet", format_name(w.format));
  if (w.weight.dtype != x.dtype)
    return unsupported("matmul: weight dtype {} differs from the activation dtype {}; convert weights to the "
                       "activation dtype when uploading them",
                       dtype_name(w.weight.dtype), dtype_name(x.dtype));
  const int64_t n = w.weight.rows(), k = w.weight.cols();
  if (w.weight.shape.ndim != 2 || (w.out_features && w.out_features != n) || (w.in_features && w.in_features != k))
    return invalid_argument("matmul: weight {} does not match out_features {} x in_features {}", w.weight.shape.str(),
                            w.out_features, w.in_features);
  RETURN_IF_ERROR(expect_shape2("matmul", "x", x, x.rows(), k));
  if (out.dtype != x.dtype) return invalid_argument("matmul: out is {} but x is {}", dtype_name(out.dtype), dtype_name(x.dtype));
  RETURN_IF_ERROR(expect_shape2("matmul", "out", out, x.rows(), n));
  if (w.bias.data != nullptr) {
    RETURN_IF_ERROR(expect_cuda("matmul", "bias", w.bias));
    if (w.bias.numel() != n || !is_float_dtype_cuda(w.bias.dtype))
      return invalid_argument("matmul: bias {} {} does not match [{}] float", w.bias.shape.str(),
                              dtype_name(w.bias.dtype), n);
  }
  if (n > INT_MAX || k > INT_MAX || x.rows() > INT_MAX)
    return invalid_argument("matmul: sizes T={} N={} K={} exceed cuBLAS's int range", x.rows(), n, k);
  if (out.data == x.data) return invalid_argument("matmul: out must not alias x");
  return Status::ok();
}

cudaDataType_t cuda_type(DType d) { return d == DType::kBF16 ? CUDA_R_16BF : CUDA_R_16F; }

}  // namespace

Status matmul_cuda(View out, View x, const LinearWeight& w, cublasHandle_t handle, cudaStream_t stream) {
  RETURN_IF_ERROR(check_matmul(out, x, w));
  const int rows = static_cast<int>(x.rows());
  const int n = static_cast<int>(w.weight.rows()), k = static_cast<int>(w.weight.cols());
  if (rows == 0 || n == 0) return Status::ok();
  float beta = 0.f;
  if (w.bias.data != nullptr) {
    constexpr int kThreads = 256;
    RETURN_IF_ERROR(dispatch_act(out.dtype, "matmul", [&](auto tag) {
      using T = decltype(tag);
      matmul_bias_kernel<T><<<grid_for(static_cast<int64_t>(rows) * n, kThreads), kThreads, 0, stream>>>(
          out.as<T>(), w.bias.data, w.bias.dtype, rows, n);
      CUDA_RETURN_IF_ERROR(cudaGetLastError());
      return Status::ok();
    }));
    beta = 1.f;
  }
  const float alpha = 1.f;
  const cudaDataType_t t = cuda_type(x.dtype);
  CUBLAS_RETURN_IF_ERROR(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, n, rows, k, &alpha, w.weight.data, t, k,
                                      x.data, t, k, &beta, out.data, t, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  return Status::ok();
}

}  // namespace compactor
