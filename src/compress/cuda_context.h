// The GPU compressors' handles (internal to src/compress; gptq_cuda.h is the public API): cuBLAS
// (default math mode: f32 GEMMs stay f32, no TF32) and cuSOLVER, both on the CUDA backend's
// stream so their work is ordered with the model's ops without synchronisation.
// Test: build-cuda/tests/test_cuda_gptq (on a GPU machine).
#pragma once

#ifdef COMPACTOR_HAS_CUDA

#include <cublas_v2.h>
#include <cusolverDn.h>

#include <array>

#include "backend/cuda/cuda_backend.h"

namespace compactor {

class CudaCompressContext {
 public:
  explicit CudaCompressContext(CudaBackend& backend) : backend_(backend) {}
  ~CudaCompressContext();
  CudaCompressContext(const CudaCompressContext&) = delete;
  CudaCompressContext& operator=(const CudaCompressContext&) = delete;
  Status init();

  CudaBackend& backend() const { return backend_; }
  cudaStream_t stream() const { return backend_.stream(); }
  cublasHandle_t cublas() const { return cublas_; }
  cusolverDnHandle_t cusolver() const { return cusolver_; }

  // Reusable device scratch, one buffer per use that only grows (counted in the backend's peak):
  // a cudaMalloc/cudaFree pair per temporary per linear would cost milliseconds and a device
  // synchronisation each. A view stays valid until the next scratch() call for the same slot.
  enum class Slot {
    kW, kWHat, kRtnHat,                                            // ptq_cuda.cpp, per linear
    kPerm, kDead, kFactor, kSolverWork, kInfo, kScales, kZeros,    // gptq_quantize_cuda
    kSweep, kSweepCodes, kErr, kCodes,
    kRtnScales, kRtnZeros, kRtnCodes,                              // rtn_quantize_cuda
    kDiff, kDiffGram, kDot,                                        // the output-error measurement
    kCount
  };
  View scratch(Slot slot, Shape shape, DType dtype) {
    View v;
    v.shape = shape;
    v.dtype = dtype;
    v.device = Device::kCuda;
    v.data = scratch_[static_cast<size_t>(slot)].reserve(static_cast<size_t>(v.bytes()));
    return v;
  }

 private:
  CudaBackend& backend_;
  cublasHandle_t cublas_ = nullptr;
  cusolverDnHandle_t cusolver_ = nullptr;
  std::array<DeviceBuffer, static_cast<size_t>(Slot::kCount)> scratch_;
};

}  // namespace compactor

#endif  // COMPACTOR_HAS_CUDA
