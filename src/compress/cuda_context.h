// The GPU compressors' handles (internal to src/compress; gptq_cuda.h is the public API): cuBLAS
// (default math mode: f32 GEMMs stay f32, no TF32) and cuSOLVER, both on the CUDA backend's
// stream so their work is ordered with the model's ops without synchronisation.
// Test: build-cuda/tests/test_cuda_gptq (on a GPU machine).
#pragma once

#ifdef COMPACTOR_HAS_CUDA

#include <cublas_v2.h>
#include <cusolverDn.h>

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
  // A device f32 scratch tensor of `shape` (allocated through the backend: counted in its peak).
  Tensor alloc_f32(Shape shape) const { return backend_.alloc(shape, DType::kF32); }

 private:
  CudaBackend& backend_;
  cublasHandle_t cublas_ = nullptr;
  cusolverDnHandle_t cusolver_ = nullptr;
};

}  // namespace compactor

#endif  // COMPACTOR_HAS_CUDA
