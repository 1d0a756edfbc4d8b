// The CUDA backend: bf16 (default) or f16 activations on one GPU, one stream for all work, a
// cuBLAS handle with its workspace for matmul, and small device buffers for the host-side op
// arguments (token ids, per-sequence offsets, targets, RoPE tables). Each op is a launcher in its
// own .cu/.cuh pair; this class validates host arguments, uploads them and calls the launchers.
// The Backend interface returns nothing, so a launcher error (a caller bug or a CUDA failure)
// aborts through COMPACTOR_ASSERT with the launcher's message.
// Weights must already be dense in the activation dtype (Model converts them at upload); norm
// weights and embedding tables may be f32, f16 or bf16.
// Test: build-cuda/tests/test_cuda_ops (on a GPU machine; skipped without one).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"

struct CUstream_st;   // cudaStream_t
struct CUevent_st;    // cudaEvent_t
struct cublasContext; // cublasHandle_t

namespace compactor {

struct CudaBackendOptions {
  DType activation_dtype = DType::kBF16;  // kBF16 or kF16
  int device = 0;                         // CUDA device ordinal
  int attention_splits = 0;               // 0: heuristic; > 0 forces the key split count (tests)
};

// A device allocation that only grows (scratch for op results and workspaces).
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer();
  void* reserve(size_t bytes);  // keeps the contents only when no growth is needed
  void* data() const { return data_; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

// Small host arguments (ids, offsets, targets, tables) on their way to the device: copied into
// pinned memory and sent with cudaMemcpyAsync, so the caller's buffer may be reused at once and
// the host never waits for the GPU. The pinned copy is reused only after the event that marks
// the previous transfer's completion (long past in practice).
class UploadBuffer {
 public:
  UploadBuffer() = default;
  UploadBuffer(const UploadBuffer&) = delete;
  UploadBuffer& operator=(const UploadBuffer&) = delete;
  ~UploadBuffer();
  // Returns the device copy of host[0 .. bytes), ordered on `stream` before later work.
  const void* upload(const void* host, size_t bytes, CUstream_st* stream);
  const void* device_data() const { return device_.data(); }

 private:
  DeviceBuffer device_;
  void* pinned_ = nullptr;
  size_t pinned_bytes_ = 0;
  struct CUevent_st* done_ = nullptr;  // cudaEvent_t recorded after the last transfer
};

class CudaBackend final : public Backend {
 public:
  // An error (not a crash) when no GPU is usable or the dtype is not bf16/f16.
  static Result<std::unique_ptr<CudaBackend>> create(const CudaBackendOptions& options = {});
  ~CudaBackend() override;

  Device device() const override { return Device::kCuda; }
  std::string name() const override { return name_; }
  DType activation_dtype() const override { return options_.activation_dtype; }

  Tensor alloc(Shape shape, DType dtype) override;
  void copy_to_host(View src, void* dst) override;
  void copy_from_host(const void* src, View dst) override;
  void copy(View dst, View src) override;  // device to device on the stream
  void synchronize() override;

  void embedding(View out, const int32_t* ids, View table) override;
  void rms_norm(View out, View x, View weight, float eps) override;
  void add_rms_norm(View out, View residual, View delta, View weight, float eps) override;
  void add(View x, View delta) override;
  void matmul(View out, View x, const LinearWeight& w) override;
  void rope(View x, int n_heads, int head_dim, const float* inv_freq, const BatchLayout& layout) override;
  void kv_store(View k_cache, View v_cache, View k, View v, const BatchLayout& layout) override;
  void attention(View out, View q, View k_cache, View v_cache, const AttentionParams& p,
                 const BatchLayout& layout) override;
  void swiglu(View out, View gate, View up) override;
  void cross_entropy(float* nll, View logits, const int32_t* targets) override;

  CUstream_st* stream() const { return stream_; }
  int sm_count() const { return sm_count_; }

 private:
  explicit CudaBackend(const CudaBackendOptions& options) : options_(options) {}
  Status init();
  struct Batch;  // DeviceBatch plus its host storage
  Batch upload_batch(const BatchLayout& layout);
  const float* upload_inv_freq(const float* inv_freq, int head_dim);

  CudaBackendOptions options_;
  std::string name_ = "cuda";
  int sm_count_ = 1;
  CUstream_st* stream_ = nullptr;
  cublasContext* cublas_ = nullptr;
  DeviceBuffer cublas_workspace_;
  DeviceBuffer nll_, attention_workspace_;
  UploadBuffer ids_, targets_, past_, inv_freq_;
  std::vector<int32_t> past_uploaded_;    // host mirror of past_ (skips repeated uploads)
  std::vector<float> inv_freq_uploaded_;  // host mirror of inv_freq_ (uploaded once per table)
};

// The factory entry used by make_backend(BackendKind::kCuda).
Result<std::unique_ptr<Backend>> make_cuda_backend(const CudaBackendOptions& options = {});

}  // namespace compactor
