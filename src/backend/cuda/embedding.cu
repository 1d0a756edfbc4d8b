// Token embedding lookup: one block per token row, threads stride over the hidden dim.
// Test: build-cuda/tests/test_cuda_ops --gtest_filter='*Embedding*' (on a GPU machine).
#include "backend/cuda/device_utils.cuh"
#include "backend/cuda/embedding.cuh"
#include "backend/cuda/launch.cuh"

namespace compactor {

template <typename T>
__global__ void embedding_kernel(T* __restrict__ out,            // [T, D]
                                 const int32_t* __restrict__ ids,  // [T]
                                 const void* __restrict__ table,   // [V, D] table_dtype
                                 DType table_dtype, int64_t dim) {
  wait_for_prior_grids();
  const int64_t row = blockIdx.x;
  const int64_t src = static_cast<int64_t>(ids[row]) * dim;
  for (int64_t d = threadIdx.x; d < dim; d += blockDim.x)
    out[row * dim + d] = from_f32<T>(load_any(table, table_dtype, src + d));
}

Status embedding_cuda(View out, const int32_t* ids_dev, View table, cudaStream_t stream) {
  RETURN_IF_ERROR(expect_act("embedding", "out", out));
  RETURN_IF_ERROR(expect_cuda("embedding", "table", table));
  if (!is_float_dtype_cuda(table.dtype))
    return unsupported("embedding: table dtype {} is not f32, f16 or bf16", dtype_name(table.dtype));
  if (table.shape.ndim != 2 || table.cols() != out.cols())
    return invalid_argument("embedding: table {} does not match out {} (expected [V, {}])", table.shape.str(),
                            out.shape.str(), out.cols());
  const int64_t rows = out.rows(), dim = out.cols();
  if (rows == 0) return Status::ok();
  if (rows > 0x7fffffff) return invalid_argument("embedding: {} rows exceed one grid", rows);
  const int threads = dim >= 256 ? 256 : 64;
  return dispatch_act(out.dtype, "embedding", [&](auto tag) {
    using T = decltype(tag);
    CUDA_RETURN_IF_ERROR(launch_kernel(embedding_kernel<T>, static_cast<unsigned>(rows), threads, 0, stream,
                                       out.as<T>(), ids_dev, table.data, table.dtype, dim));
    return Status::ok();
  });
}

}  // namespace compactor
