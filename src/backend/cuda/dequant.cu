// Dequantization of packed intN weights: one thread per output element in a grid-stride loop,
// reading its code and zero through the shared packed_value (any of 2/3/4/8 bits, a uniform
// branch), so writes are coalesced along K. Instantiated for the two activation types only.
// Test: build-*/tests/test_cuda_dequant (on a GPU machine).
#include "backend/cuda/dequant.cuh"
#include "backend/cuda/device_utils.cuh"
#include "formats/quant_pack.h"

namespace compactor {

template <typename T>
__global__ void dequantize_kernel(T* __restrict__ out,                // [N, K]
                                  const int32_t* __restrict__ qweight,  // [W(K), N]
                                  const __half* __restrict__ scales,    // [G, N]
                                  const int32_t* __restrict__ qzeros,   // [G, W(N)]
                                  const int32_t* __restrict__ g_idx,    // [K] or nullptr
                                  int bits, int group_size, int64_t n, int64_t k) {
  const int64_t zero_words = (n * bits + 31) / 32;
  const int64_t total = n * k;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = i / k, col = i - row * k;
    const int64_t grp = g_idx ? g_idx[col] : (group_size ? col / group_size : 0);
    const float code = static_cast<float>(packed_value(qweight + row, n, bits, col));
    const float zero = static_cast<float>(packed_value(qzeros + grp * zero_words, 1, bits, row));
    out[i] = from_f32<T>((code - zero) * __half2float(scales[grp * n + row]));
  }
}

namespace {

Status check_dequantize(View out, const LinearWeight& w) {
  if (!w.quantized()) return invalid_argument("dequantize: format {} is not quantized", format_name(w.format));
  RETURN_IF_ERROR(expect_act("dequantize", "out", out));
  RETURN_IF_ERROR(expect_shape2("dequantize", "out", out, w.out_features, w.in_features));
  RETURN_IF_ERROR(expect_cuda("dequantize", "qweight", w.qweight));
  RETURN_IF_ERROR(expect_cuda("dequantize", "scales", w.scales));
  RETURN_IF_ERROR(expect_cuda("dequantize", "qzeros", w.qzeros));
  if (w.g_idx.data != nullptr) RETURN_IF_ERROR(expect_cuda("dequantize", "g_idx", w.g_idx));
  return check_packed_shapes("dequantize", w.bits(), w.group_size, w.out_features, w.in_features, w.qweight,
                             w.scales, w.qzeros, w.g_idx);
}

}  // namespace

Status dequantize_cuda(View out, const LinearWeight& w, cudaStream_t stream) {
  RETURN_IF_ERROR(check_dequantize(out, w));
  const int64_t total = w.out_features * w.in_features;
  if (total == 0) return Status::ok();
  constexpr int kThreads = 256;
  return dispatch_act(out.dtype, "dequantize", [&](auto tag) {
    using T = decltype(tag);
    dequantize_kernel<T><<<grid_for(total, kThreads), kThreads, 0, stream>>>(
        out.as<T>(), w.qweight.as<const int32_t>(), w.scales.as<const __half>(), w.qzeros.as<const int32_t>(),
        w.g_idx.as<const int32_t>(), w.bits(), w.group_size, w.out_features, w.in_features);
    CUDA_RETURN_IF_ERROR(cudaGetLastError());
    return Status::ok();
  });
}

}  // namespace compactor
