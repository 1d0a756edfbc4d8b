// RMSNorm (Zhang & Sennrich 2019) as in HF Llama: one block per row; pass 1 sums squares in f32,
// pass 2 rescales. Each thread touches the same indices in both passes, so out may alias x.
// Test: build-cuda/tests/test_cuda_ops --gtest_filter='*RmsNorm*' (on a GPU machine).
#include "backend/cuda/device_utils.cuh"
#include "backend/cuda/rms_norm.cuh"

namespace compactor {

template <typename T>
__global__ void rms_norm_kernel(T* out,                            // [T, D]
                                const T* x,                        // [T, D]
                                const void* __restrict__ weight,   // [D] weight_dtype
                                DType weight_dtype, int64_t dim, float eps) {
  const int64_t base = static_cast<int64_t>(blockIdx.x) * dim;
  float ss = 0.f;
  for (int64_t d = threadIdx.x; d < dim; d += blockDim.x) {
    const float v = to_f32(x[base + d]);
    ss += v * v;
  }
  const float rstd = rsqrtf(block_sum(ss) / static_cast<float>(dim) + eps);
  for (int64_t d = threadIdx.x; d < dim; d += blockDim.x)
    out[base + d] = from_f32<T>(to_f32(x[base + d]) * rstd * load_any(weight, weight_dtype, d));
}

Status check_norm_weight(const char* op, View weight, int64_t dim) {
  RETURN_IF_ERROR(expect_cuda(op, "weight", weight));
  if (!is_float_dtype_cuda(weight.dtype))
    return unsupported("{}: weight dtype {} is not f32, f16 or bf16", op, dtype_name(weight.dtype));
  if (weight.numel() != dim) return invalid_argument("{}: weight {} does not match D = {}", op, weight.shape.str(), dim);
  return Status::ok();
}

int norm_threads(int64_t dim) {
  if (dim >= 4096) return 1024;
  if (dim >= 1024) return 512;
  if (dim >= 256) return 256;
  return 64;
}

Status rms_norm_cuda(View out, View x, View weight, float eps, cudaStream_t stream) {
  RETURN_IF_ERROR(expect_act("rms_norm", "x", x));
  RETURN_IF_ERROR(expect_cuda("rms_norm", "out", out));
  RETURN_IF_ERROR(expect_same("rms_norm", "out", out, x));
  RETURN_IF_ERROR(check_norm_weight("rms_norm", weight, x.cols()));
  const int64_t rows = x.rows(), dim = x.cols();
  if (rows == 0) return Status::ok();
  if (rows > 0x7fffffff) return invalid_argument("rms_norm: {} rows exceed one grid", rows);
  return dispatch_act(x.dtype, "rms_norm", [&](auto tag) {
    using T = decltype(tag);
    rms_norm_kernel<T><<<static_cast<unsigned>(rows), norm_threads(dim), 0, stream>>>(
        out.as<T>(), x.as<T>(), weight.data, weight.dtype, dim, eps);
    CUDA_RETURN_IF_ERROR(cudaGetLastError());
    return Status::ok();
  });
}

}  // namespace compactor
