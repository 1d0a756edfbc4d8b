// The CUDA backend: bf16 (default) or f16 activations on one GPU, one stream for all work, a
// cuBLAS handle with its workspace for matmul, and small device buffers for the host-side op
// arguments (token ids, per-sequence offsets, targets, RoPE tables). Each op is a launcher in its
// own .cu/.cuh pair; this class validates host arguments, uploads them and calls the launchers.
// The Backend interface returns nothing, so a launcher error (a caller bug or a CUDA failure)
// aborts through COMPACTOR_ASSERT with the launcher's message.
// Dense weights must already be in the activation dtype (Model converts them at upload); packed
// intN weights are dequantized per matmul (dequant.cuh); norm weights and embedding tables may be
// f32, f16 or bf16.
// Test: build-cuda/tests/test_cuda_ops (on a GPU machine; skipped without one).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/sample_params.h"

struct CUstream_st;   // cudaStream_t
struct CUevent_st;    // cudaEvent_t
struct cublasContext; // cublasHandle_t
struct CUgraphExec_st; // cudaGraphExec_t

namespace compactor {

struct QgemvWeight;  // backend/cuda/qgemv.cuh

// kAuto: tensor cores where supported: the decode kernel (keys on the mma's M side) for <= 8 query
// rows per kv head, else 16 query rows per warp; kTensorCores: always the latter (A/B baseline).
// A 32-rows-per-warp variant was measured on the H100 (2026-11-24: no gain at prefill, slower
// decode at B=32) and removed.
enum class AttentionKernel { kAuto, kTensorCores, kCudaCores };
// kAuto: the GEMV kernel for T <= 4 rows; quantized weights: the fused kernel (qgemv.cuh) for
// T <= kQgemvAutoMaxRows. kCublas: cuBLAS (quantized weights dequantized first).
enum class MatmulKernel { kAuto, kCublas };
// The fused kernel for the weights that have a tensor-core layout (tc_layout_supported: int4, int8
// without act-order, NF4 with blocks >= 64): tensor cores (mma.sync, up to kQgemvTcAutoMaxRows rows)
// or CUDA-core FMAs (up to kQgemvAutoMaxRows); the other formats always use the CUDA-core one.
enum class QuantKernel { kCudaCores, kTensorCores };
enum class FuseOps { kOn, kOff };  // the Backend fusion points as one launch each where supported
// kOn: the op kernels go out as programmatic dependent launches (launch.cuh) on devices of compute
// capability 9.0 and up: a kernel's blocks start while its predecessor drains, and the GEMVs fetch
// their first weights before waiting for x. Process-wide (the last backend created sets it).
enum class DependentLaunch { kOn, kOff };
// kOn: tensor-core GEMVs of up to 16 rows stream their weights through shared memory by TMA bulk
// copies (qgemv_stream.cu) where the weight fits; kOff: the per-lane kernel (A/B runs).
// Process-wide, like DependentLaunch.
enum class WeightStreaming { kOn, kOff };
// kFused: int4 tc-layout weights at more than 32 rows run the mixed-input wgmma GEMM
// (qgemm_wgmma.cu) on compute capability 9.0; kDequantize: dequantize + cuBLAS there (and on
// every other GPU). The default is kFused: on the H100 it is faster at prefill (TTFT 512 tokens
// 15.5 vs 19.8 ms, README) and needs no bf16 copy of the weight. Process-wide, like DependentLaunch.
enum class QuantGemm { kFused, kDequantize };

struct CudaBackendOptions {
  DType activation_dtype = DType::kBF16;  // kBF16 or kF16
  int device = 0;                         // CUDA device ordinal
  int attention_splits = 0;               // 0: heuristic; > 0 forces the key split count (tests)
  AttentionKernel attention_kernel = AttentionKernel::kAuto;
  MatmulKernel matmul_kernel = MatmulKernel::kAuto;
  QuantKernel quant_kernel = QuantKernel::kTensorCores;
  FuseOps fuse = FuseOps::kOn;
  DependentLaunch dependent_launch = DependentLaunch::kOn;
  WeightStreaming weight_streaming = WeightStreaming::kOn;
  QuantGemm quant_gemm = QuantGemm::kFused;
};

// A device allocation that only grows (scratch for op results and workspaces).
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer();
  void* reserve(size_t bytes);  // keeps the contents only when no growth is needed
  // As reserve, and zero-filled on the stream whenever it (re)allocates.
  void* reserve_zeroed(size_t bytes, CUstream_st* stream);
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

// Device memory: what cudaMemGetInfo says and what this process allocated through the backend
// (Tensor allocations and the backend's own buffers; cuBLAS's internal memory is not counted).
struct CudaMemoryInfo {
  int64_t free_bytes = 0, total_bytes = 0;
  int64_t allocated_bytes = 0;       // live allocations made through the backend
  int64_t peak_allocated_bytes = 0;  // high-water mark since start or reset_peak_memory()
};

// An instantiated CUDA graph (one captured decode step); replayed on the backend's stream.
class CudaGraph {
 public:
  CudaGraph() = default;
  explicit CudaGraph(CUgraphExec_st* exec) : exec_(exec) {}
  CudaGraph(CudaGraph&& o) noexcept : exec_(o.exec_) { o.exec_ = nullptr; }
  CudaGraph& operator=(CudaGraph&& o) noexcept;
  CudaGraph(const CudaGraph&) = delete;
  CudaGraph& operator=(const CudaGraph&) = delete;
  ~CudaGraph();
  bool valid() const { return exec_ != nullptr; }
  CUgraphExec_st* exec() const { return exec_; }

 private:
  CUgraphExec_st* exec_ = nullptr;
};

// Per-step arguments that live on the device (decode loops, CUDA graphs): while set, embedding
// reads token ids from `ids` [B] and every op reads the sequences' past lengths from `past` [B]
// instead of uploading host arguments (the host layout is still used for checks), and attention
// is planned for `max_keys` keys with the lengths read on the device. A captured step then holds
// no host data and stays valid as ids and past change between replays.
struct CudaDeviceArgs {
  const int32_t* ids = nullptr;   // [B] i32 device
  const int32_t* past = nullptr;  // [B] i32 device
  int max_keys = 0;               // longest past + T any replay will see (the cache capacity)
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
  void matmul_group(const View* outs, View x, const LinearWeight* const* ws, int n) override;
  void matmul_add(View x, View a, const LinearWeight& w, View scratch) override;
  void swiglu_matmul_add(View x, View gate, View up, const LinearWeight& w, View act, View scratch) override;
  void rope_kv_store(View q, View k, View v, View k_cache, View v_cache, int heads, int kv_heads, int head_dim,
                     const float* inv_freq, const BatchLayout& layout) override;
  void cross_entropy(float* nll, View logits, const int32_t* targets) override;

  CUstream_st* stream() const { return stream_; }
  int sm_count() const { return sm_count_; }

  // ---- beyond the Backend interface: synthetic weights, decode loops, measurement ----
  // out: any float dtype on this device, N(mean, stddev²) keyed by stream_id (fill.cuh).
  Status fill_normal(View out, uint64_t stream_id, float mean, float stddev);
  // ids: [B] i32 device; logits: [B, V] act; see sample.cuh for step/history.
  Status sample(int32_t* ids, View logits, const SampleParams& p, const int32_t* step = nullptr,
                int32_t* history = nullptr, int64_t history_stride = 0);
  // past[b] += 1 (b < batch), *step += 1: the end of one decode step, on the device.
  Status decode_advance(int32_t* past, int batch, int32_t* step);
  void set_device_args(const CudaDeviceArgs& args) { device_args_ = args; }
  void clear_device_args() { device_args_ = CudaDeviceArgs{}; }
  const CudaDeviceArgs& device_args() const { return device_args_; }

  // Stream capture of the work queued by the calls between begin and end (nothing runs while
  // capturing). end_capture returns an error when the captured work cannot form a graph.
  Status begin_capture();
  Result<CudaGraph> end_capture();
  Status replay(const CudaGraph& graph);

  // Milliseconds of device time for the work `fn` queues on the stream (CUDA events around it).
  Result<float> time_ms(const std::function<Status()>& fn);
  CudaMemoryInfo memory_info() const;
  // The fused quantized matmul keeps a repacked copy of each quantized weight it multiplies (made
  // on first use, outside stream capture). Call forget_repacked_weights after changing packed
  // tensors in place; repacked_bytes is the device memory those copies hold.
  void forget_repacked_weights();
  int64_t repacked_bytes() const;
  void reset_peak_memory();
  int device_ordinal() const { return options_.device; }

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
  DeviceBuffer attention_counters_;  // zeroed when (re)allocated; the decode kernel leaves them zero
  DeviceBuffer dequant_;  // [N, K] act: a quantized linear dequantized for cuBLAS (dequant.cuh)
  struct QgemvCache;      // repacked quantized weights by source (cuda_backend.cpp)
  std::shared_ptr<QgemvCache> qgemv_cache_;
  DeviceBuffer qgemv_scratch_;  // [M, Kp] act: x gathered/padded for the fused kernel
  // The repacked weight for the fused kernel, or nullptr when the dequantize path must run.
  const QgemvWeight* fused_quantized(const LinearWeight& w, View x);
  bool matmul_group_quantized(const View* outs, View x, const LinearWeight* const* ws, int n);
  void run_qgemv(View out, View x, const QgemvWeight& q, View bias, bool accumulate);
  UploadBuffer ids_, targets_, past_, inv_freq_;
  std::vector<int32_t> past_uploaded_;    // host mirror of past_ (skips repeated uploads)
  std::vector<float> inv_freq_uploaded_;  // host mirror of inv_freq_ (uploaded once per table)
  CudaDeviceArgs device_args_;
  CUevent_st* timer_start_ = nullptr;
  CUevent_st* timer_stop_ = nullptr;
};

// The factory entry used by make_backend(BackendKind::kCuda).
Result<std::unique_ptr<Backend>> make_cuda_backend(const CudaBackendOptions& options = {});

}  // namespace compactor
