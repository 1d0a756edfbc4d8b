// Host-side helpers shared by the CUDA backend: the two error tiers of CONVENTIONS.md item 8 for
// CUDA and cuBLAS calls, argument checks that launchers run before any launch, and the batch
// layout as the kernels see it. Safe to include from .cpp files (no device code here; that lives
// in device_utils.cuh). Test: build-cuda/tests/test_cuda_ops (on a GPU machine).
#pragma once

#include <cstdint>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "core/status.h"
#include "core/tensor.h"

// Invariant tier: a CUDA call that must not fail (aborts with file:line and the CUDA message).
#define CUDA_CHECK(call)                                                                     \
  do {                                                                                       \
    cudaError_t _cuda_err = (call);                                                          \
    if (_cuda_err != cudaSuccess)                                                            \
      ::compactor::assert_fail(__FILE__, __LINE__, #call, cudaGetErrorString(_cuda_err));    \
  } while (0)

#define CUBLAS_CHECK(call)                                                                       \
  do {                                                                                           \
    cublasStatus_t _cublas_st = (call);                                                          \
    if (_cublas_st != CUBLAS_STATUS_SUCCESS)                                                     \
      ::compactor::assert_fail(__FILE__, __LINE__, #call, cublasGetStatusString(_cublas_st));    \
  } while (0)

// Recoverable tier: returns a Status from the enclosing function (out of memory stays distinct).
#define CUDA_RETURN_IF_ERROR(call)                                                      \
  do {                                                                                  \
    cudaError_t _cuda_err = (call);                                                     \
    if (_cuda_err != cudaSuccess) return ::compactor::cuda_status(_cuda_err, #call);    \
  } while (0)

#define CUBLAS_RETURN_IF_ERROR(call)                                                        \
  do {                                                                                      \
    cublasStatus_t _cublas_st = (call);                                                     \
    if (_cublas_st != CUBLAS_STATUS_SUCCESS) return ::compactor::cublas_status(_cublas_st, #call); \
  } while (0)

namespace compactor {

inline Status cuda_status(cudaError_t err, const char* what) {
  StatusCode code = err == cudaErrorMemoryAllocation ? StatusCode::kOutOfMemory : StatusCode::kInternal;
  return Status(code, fmt::format("CUDA error in {}: {} ({})", what, cudaGetErrorString(err), cudaGetErrorName(err)));
}

inline Status cublas_status(cublasStatus_t st, const char* what) {
  StatusCode code = st == CUBLAS_STATUS_ALLOC_FAILED ? StatusCode::kOutOfMemory : StatusCode::kInternal;
  return Status(code, fmt::format("cuBLAS error in {}: {}", what, cublasGetStatusString(st)));
}

// The batch layout of backend.h with the per-sequence offsets on both sides: launchers check
// shapes against the host copy, kernels read the device copy.
struct DeviceBatch {
  int batch = 1;                      // B
  int tokens = 1;                     // T new tokens per sequence
  const int32_t* past_host = nullptr;  // [B] host
  const int32_t* past_dev = nullptr;   // [B] device
  int max_keys = 0;  // > 0: the lengths live on the device; plan for up to this many keys
  int max_past() const {
    int m = 0;
    for (int b = 0; b < batch; ++b) m = past_host[b] > m ? past_host[b] : m;
    return m;
  }
};

// ---- argument checks run by every launcher before it launches anything ----

inline bool is_act_dtype(DType d) { return d == DType::kBF16 || d == DType::kF16; }
inline bool is_float_dtype_cuda(DType d) { return d == DType::kF32 || is_act_dtype(d); }

inline Status expect_cuda(const char* op, const char* name, const View& v) {
  if (v.data == nullptr && v.numel() > 0) return invalid_argument("{}: {} has no data", op, name);
  if (v.device != Device::kCuda) return invalid_argument("{}: {} must be a CUDA view, got a {} view", op, name, device_name(v.device));
  return Status::ok();
}

inline Status expect_act(const char* op, const char* name, const View& v) {
  RETURN_IF_ERROR(expect_cuda(op, name, v));
  if (!is_act_dtype(v.dtype))
    return unsupported("{}: {} has dtype {}; the CUDA backend computes on bf16 or f16 activations", op, name, dtype_name(v.dtype));
  return Status::ok();
}

inline Status expect_shape2(const char* op, const char* name, const View& v, int64_t rows, int64_t cols) {
  if (v.rows() != rows || v.cols() != cols)
    return invalid_argument("{}: {} has shape {}; expected [{}, {}]", op, name, v.shape.str(), rows, cols);
  return Status::ok();
}

inline Status expect_same(const char* op, const char* name, const View& v, const View& ref) {
  if (!(v.shape == ref.shape) || v.dtype != ref.dtype)
    return invalid_argument("{}: {} is {} {}; expected {} {}", op, name, v.shape.str(), dtype_name(v.dtype),
                            ref.shape.str(), dtype_name(ref.dtype));
  return Status::ok();
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Streaming multiprocessors of the current device (the kernels that size their grid by it).
inline Result<int> current_sm_count() {
  int device = 0, sms = 0;
  if (cudaError_t err = cudaGetDevice(&device); err != cudaSuccess) return cuda_status(err, "cudaGetDevice");
  if (cudaError_t err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device); err != cudaSuccess)
    return cuda_status(err, "cudaDeviceGetAttribute");
  return sms > 0 ? sms : 1;
}

}  // namespace compactor
