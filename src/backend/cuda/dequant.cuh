// Dequantization of packed intN weights (formats/quant_pack.h) on the GPU into a dense buffer of
// the activation dtype, so quantized linears run through the dense cuBLAS matmul: the correct
// (not yet fast) path; a fused GEMV/GEMM kernel can replace it per format later.
// Test: build-*/tests/test_cuda_dequant (on a GPU machine).
#pragma once

#include "backend/backend.h"
#include "backend/cuda/common.cuh"

namespace compactor {

// out: [N, K] bf16|f16 = (code - zero) * scale, rounded once from f32 (the spec: dequantize_ref).
// w: quantized LinearWeight whose qweight/scales/qzeros/g_idx are CUDA views.
Status dequantize_cuda(View out, const LinearWeight& w, cudaStream_t stream);

// Checks an NF4 LinearWeight (formats/nf4.h) for the CUDA kernels: every tensor on the device,
// dtypes and shapes; messages name `op` and the tensor.
Status check_nf4_weight_cuda(const char* op, const LinearWeight& w);

}  // namespace compactor
