// Weight quantizers on the GPU (CUDA backend): GPTQ (the same algorithm and options as gptq.h /
// obs_solver.h: dead inputs, act-order, damping with retries, static or dynamic groups, blocked
// sweep with the lazy update as one cuBLAS GEMM), RTN, and the output-error measurement of
// hessian.h, all on device buffers. Calibration statistics accumulate on the GPU too
// (InputStats::on_device, hessian.h), so no activation or Hessian crosses to the host; only the
// integer codes, scales and zeros come back (the compressed model is written from the host).
//
//   H = 2/n · XᵀX (f32), dead inputs and act-order as on the host (decided from diag H on the host)
//   U = chol(H⁻¹) upper: cuSOLVER spotrf, spotri, spotrf (column-major lower == row-major upper)
//   sweep: backend/cuda/gptq_sweep.cuh per block of 128 columns, then W_rest −= Uᵀ_block,rest · Err
// Results agree with the host version up to float rounding (cuSOLVER vs LAPACK, GEMM order): the
// same codes for the vast majority of weights. Test: build-cuda/tests/test_cuda_gptq (on a GPU).
// In a build without CUDA every function returns an `unsupported` error.
#pragma once

#include <memory>
#include <string>

#include "backend/backend.h"
#include "compress/gptq.h"
#include "formats/quant.h"

namespace compactor {

// cuBLAS and cuSOLVER handles bound to a CUDA backend's stream (defined in compress/cuda_context.h).
class CudaCompressContext;

// Errors: `backend` is not a CUDA backend, this build has no CUDA, a handle cannot be created.
Result<std::shared_ptr<CudaCompressContext>> make_cuda_compress_context(Backend& backend);

struct GpuSolveTimes {
  double factor_seconds = 0;  // damping, permutation, Cholesky of H⁻¹
  double sweep_seconds = 0;   // column sweep + lazy updates + codes to the host
};

// w: [N, K] f32 device; gram: [K, K] f32 device (XᵀX over `tokens` rows); w_hat: [N, K] f32 device,
// out: the dequantized weights. Codes, scales, zeros and g_idx come back on the host exactly as
// gptq_quantize() lays them out. Errors as gptq_quantize (bad spec, unfactorable Hessian).
Result<GptqResult> gptq_quantize_cuda(CudaCompressContext& ctx, View w, View gram, int64_t tokens,
                                      const GptqOptions& opts, View w_hat, const std::string& module,
                                      GpuSolveTimes* times = nullptr);

// Round-to-nearest with natural groups (rtn_quantize). w, w_hat: [N, K] f32 device. With
// `host_codes` false the returned QuantizedLinear has only its shape and spec (error measurement).
Result<QuantizedLinear> rtn_quantize_cuda(CudaCompressContext& ctx, View w, const QuantSpec& spec, View w_hat,
                                          const std::string& module, bool host_codes = true);

// ‖(W − Ŵ)X‖² / ‖WX‖² from the Gram matrix (relative_output_error). w, w_hat: [N, K] f32 device;
// gram: [K, K] f32 device. `base` (optional) caches ‖WX‖² between calls with the same w and gram.
Result<double> relative_output_error_cuda(CudaCompressContext& ctx, View w, View w_hat, View gram,
                                          double* base = nullptr);

}  // namespace compactor
