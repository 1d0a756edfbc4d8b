// Quantization-grid kernels for the GPU weight compressors (src/compress/gptq_cuda.cpp): the
// integer grid of compress/quant_grid.h (per-group min/max with 0 included -> scale rounded to f16,
// integer zero point; codes clamp(rint(w / s) + z, 0, 2^bits - 1)) computed with the same float
// operations as the host, so GPU and CPU pick the same codes; round-to-nearest with natural groups;
// and the elementwise helpers of the error measurement (cast, difference, f64 dot product).
// Test: build-cuda/tests/test_cuda_gptq (on a GPU machine).
#pragma once

#include "backend/cuda/common.cuh"
#include "formats/quant.h"

namespace compactor {

// Natural groups of w: [N, K] f32 device (dead: [K] u8 device or nullptr; dead columns count as 0).
// scales, zeros: [N, G] f32 device (G = K / group_size, 1 per-channel) are always written;
// codes: [N, K] u8 and deq: [N, K] f32 (the dequantized weights) only when not nullptr.
Status quant_rtn_cuda(const float* w, const uint8_t* dead, int64_t n, int64_t k, const QuantSpec& spec,
                      float* scales, float* zeros, uint8_t* codes, float* deq, cudaStream_t stream);

// dst = src, elementwise between any float dtypes (f32, f16, bf16); same numel, both on the device.
Status cast_cuda(View dst, View src, cudaStream_t stream);

// d = a - b (b == nullptr: d = a); all [n] f32 device.
Status sub_f32_cuda(float* d, const float* a, const float* b, int64_t n, cudaStream_t stream);

// *out = Σ a[i]·b[i] accumulated in f64; a, b: [n] f32 device; out: one f64 on the device.
Status dot_f64_cuda(double* out, const float* a, const float* b, int64_t n, cudaStream_t stream);

}  // namespace compactor
