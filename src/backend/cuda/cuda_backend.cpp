// CudaBackend: device set-up (stream, cuBLAS, allocator hooks), memory ops, host-argument uploads
// and the op methods, each a thin call of its launcher (backend/cuda/<op>.cuh).
// Test: build-cuda/tests/test_cuda_ops (on a GPU machine; skipped without one).
#include "backend/cuda/cuda_backend.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>
#include <unordered_map>

#include "backend/cuda/add.cuh"
#include "backend/cuda/add_rms_norm.cuh"
#include "backend/cuda/attention.cuh"
#include "backend/cuda/common.cuh"
#include "backend/cuda/cross_entropy.cuh"
#include "backend/cuda/dequant.cuh"
#include "backend/cuda/embedding.cuh"
#include "backend/cuda/fill.cuh"
#include "backend/cuda/kv_store.cuh"
#include "backend/cuda/launch.cuh"
#include "backend/cuda/matmul.cuh"
#include "backend/cuda/qgemv.cuh"
#include "backend/cuda/rms_norm.cuh"
#include "backend/cuda/rope.cuh"
#include "backend/cuda/rope_kv_store.cuh"
#include "backend/cuda/sample.cuh"
#include "backend/cuda/swiglu.cuh"

namespace compactor {

namespace {

constexpr size_t kCublasWorkspaceBytes = size_t{32} << 20;  // NVIDIA's recommendation for Hopper

// Accounting of every device allocation the backend makes (peak memory for the benchmarks).
struct AllocStats {
  std::mutex mu;
  std::unordered_map<void*, size_t> sizes;
  int64_t live = 0, peak = 0;
  // Identity of each live allocation: a freed and reused address gets a new serial (the repacked
  // weight cache checks its sources with it).
  std::unordered_map<const void*, uint64_t> serials;
  uint64_t next_serial = 1;
};
AllocStats& alloc_stats() {
  static AllocStats* stats = new AllocStats();  // never destroyed: frees may run at exit
  return *stats;
}

void note_alloc(void* p, size_t bytes) {
  AllocStats& s = alloc_stats();
  std::lock_guard<std::mutex> lock(s.mu);
  s.sizes[p] = bytes;
  s.serials[p] = s.next_serial++;
  s.live += static_cast<int64_t>(bytes);
  if (s.live > s.peak) s.peak = s.live;
}

void note_free(void* p) {
  AllocStats& s = alloc_stats();
  std::lock_guard<std::mutex> lock(s.mu);
  auto it = s.sizes.find(p);
  if (it == s.sizes.end()) return;
  s.serials.erase(p);
  s.live -= static_cast<int64_t>(it->second);
  s.sizes.erase(it);
}

// The serial of the live backend allocation that starts at p; 0 for anything else.
uint64_t allocation_serial(const void* p) {
  AllocStats& s = alloc_stats();
  std::lock_guard<std::mutex> lock(s.mu);
  auto it = s.serials.find(p);
  return it == s.serials.end() ? 0 : it->second;
}

// Allocator hooks for Tensor (core cannot depend on CUDA). A failed cudaMalloc returns nullptr,
// which Tensor turns into std::bad_alloc; the sticky-free error is cleared first.
void* cuda_alloc(size_t bytes) {
  void* p = nullptr;
  if (cudaMalloc(&p, bytes) != cudaSuccess) {
    (void)cudaGetLastError();
    return nullptr;
  }
  note_alloc(p, bytes);
  return p;
}

void cuda_free(void* p) {
  note_free(p);
  const cudaError_t err = cudaFree(p);
  // At process exit the runtime may already be torn down; the memory is gone with it.
  if (err != cudaSuccess && err != cudaErrorCudartUnloading) CUDA_CHECK(err);
}

// cudaMemset runs on the legacy default stream, which the backend's (blocking) stream waits for.
void cuda_memset_zero(void* p, size_t bytes) { CUDA_CHECK(cudaMemset(p, 0, bytes)); }

void check(const Status& st) { COMPACTOR_ASSERT(st.is_ok(), "CUDA backend: {}", st.message()); }

void check_host_ids(const char* op, const char* what, const int32_t* ids, int64_t n, int64_t limit) {
  COMPACTOR_ASSERT(n == 0 || ids != nullptr, "{}: {} is null", op, what);
  for (int64_t i = 0; i < n; ++i)
    COMPACTOR_ASSERT(ids[i] >= 0 && ids[i] < limit, "{}: {}[{}] = {} is outside [0, {})", op, what, i, ids[i], limit);
}

Status no_gpu_error(const std::string& why) {
  return unsupported("--device cuda: no usable CUDA GPU ({}); use --device cpu", why);
}

}  // namespace

DeviceBuffer::~DeviceBuffer() {
  if (data_ != nullptr) cuda_free(data_);
}

void* DeviceBuffer::reserve(size_t bytes) {
  if (bytes <= bytes_ && data_ != nullptr) return data_;
  if (data_ != nullptr) {
    CUDA_CHECK(cudaDeviceSynchronize());  // no queued kernel may still read the old buffer
    cuda_free(data_);
  }
  data_ = nullptr;
  bytes_ = 0;
  data_ = cuda_alloc(bytes == 0 ? 16 : bytes);
  COMPACTOR_ASSERT(data_ != nullptr, "CUDA backend: out of device memory for a {}-byte scratch buffer", bytes);
  bytes_ = bytes;
  return data_;
}

void* DeviceBuffer::reserve_zeroed(size_t bytes, CUstream_st* stream) {
  const bool grows = data_ == nullptr || bytes > bytes_;
  void* p = reserve(bytes);
  if (grows) CUDA_CHECK(cudaMemsetAsync(p, 0, bytes_, stream));
  return p;
}

UploadBuffer::~UploadBuffer() {
  if (done_ != nullptr) (void)cudaEventDestroy(done_);
  if (pinned_ != nullptr) (void)cudaFreeHost(pinned_);
}

const void* UploadBuffer::upload(const void* host, size_t bytes, CUstream_st* stream) {
  void* dev = device_.reserve(bytes);
  if (bytes == 0) return dev;
  if (done_ == nullptr) CUDA_CHECK(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming));
  CUDA_CHECK(cudaEventSynchronize(done_));  // the previous transfer has left pinned_
  if (bytes > pinned_bytes_) {
    if (pinned_ != nullptr) CUDA_CHECK(cudaFreeHost(pinned_));
    pinned_ = nullptr;
    pinned_bytes_ = 0;
    CUDA_CHECK(cudaMallocHost(&pinned_, bytes));
    pinned_bytes_ = bytes;
  }
  std::memcpy(pinned_, host, bytes);
  CUDA_CHECK(cudaMemcpyAsync(dev, pinned_, bytes, cudaMemcpyHostToDevice, stream));
  CUDA_CHECK(cudaEventRecord(done_, stream));
  return dev;
}

struct CudaBackend::Batch {
  std::vector<int32_t> past;  // [B] host copy (zeros when the layout has none)
  DeviceBatch dev;
};

Result<std::unique_ptr<CudaBackend>> CudaBackend::create(const CudaBackendOptions& options) {
  if (options.activation_dtype != DType::kBF16 && options.activation_dtype != DType::kF16)
    return invalid_argument("CUDA backend: activation dtype {} is not bf16 or f16", dtype_name(options.activation_dtype));
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    return no_gpu_error(cudaGetErrorString(err));
  }
  if (count == 0) return no_gpu_error("the CUDA runtime reports 0 devices");
  if (options.device < 0 || options.device >= count)
    return invalid_argument("CUDA backend: device {} does not exist ({} visible)", options.device, count);
  std::unique_ptr<CudaBackend> be(new CudaBackend(options));
  RETURN_IF_ERROR(be->init());
  return be;
}

Status CudaBackend::init() {
  CUDA_RETURN_IF_ERROR(cudaSetDevice(options_.device));
  cudaDeviceProp prop{};
  CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, options_.device));
  sm_count_ = prop.multiProcessorCount;
  set_dependent_launch(options_.dependent_launch == DependentLaunch::kOn && prop.major >= 9);
  set_qgemv_streaming(options_.weight_streaming == WeightStreaming::kOn && prop.major >= 9);
  // The wgmma GEMM is sm_90a code: compute capability 9.0 exactly.
  set_qgemm_wgmma(options_.quant_gemm == QuantGemm::kFused && prop.major == 9 && prop.minor == 0);
  // The GEMM's plans ask the driver once per device how many clusters fit: here, not first inside
  // a graph capture of a decode step (one query fills the device's whole table).
  if (qgemm_wgmma_enabled()) RETURN_IF_ERROR(qgemm_wgmma_blocks_at_once(256, 1).status());
  name_ = fmt::format("cuda:{} ({}, sm_{}{}, {} activations)", options_.device, prop.name, prop.major, prop.minor,
                      dtype_name(options_.activation_dtype));
  set_device_allocator(Device::kCuda, DeviceAllocator{cuda_alloc, cuda_free, cuda_memset_zero});
  CUDA_RETURN_IF_ERROR(cudaStreamCreate(&stream_));  // blocking: ordered after legacy-stream memsets
  CUBLAS_RETURN_IF_ERROR(cublasCreate(&cublas_));
  CUBLAS_RETURN_IF_ERROR(cublasSetStream(cublas_, stream_));
  CUBLAS_RETURN_IF_ERROR(cublasSetWorkspace(cublas_, cublas_workspace_.reserve(kCublasWorkspaceBytes),
                                            kCublasWorkspaceBytes));
  return Status::ok();
}

CudaBackend::~CudaBackend() {
  if (stream_ != nullptr) (void)cudaStreamSynchronize(stream_);
  if (timer_start_ != nullptr) (void)cudaEventDestroy(timer_start_);
  if (timer_stop_ != nullptr) (void)cudaEventDestroy(timer_stop_);
  if (cublas_ != nullptr) (void)cublasDestroy(cublas_);
  if (stream_ != nullptr) (void)cudaStreamDestroy(stream_);
}

Result<std::unique_ptr<Backend>> make_cuda_backend(const CudaBackendOptions& options) {
  ASSIGN_OR_RETURN(std::unique_ptr<CudaBackend> be, CudaBackend::create(options));
  return std::unique_ptr<Backend>(std::move(be));
}

// ---- memory ----

Tensor CudaBackend::alloc(Shape shape, DType dtype) { return Tensor::empty(shape, dtype, Device::kCuda); }

void CudaBackend::copy_to_host(View src, void* dst) {
  if (src.bytes() == 0) return;
  if (src.device == Device::kCpu) {
    std::memcpy(dst, src.data, src.bytes());
    return;
  }
  CUDA_CHECK(cudaMemcpyAsync(dst, src.data, src.bytes(), cudaMemcpyDeviceToHost, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

// Returns once the copy is complete: the caller may free `src` right away (weights are uploaded
// from temporary conversion buffers), which an asynchronous copy from pageable memory does not
// guarantee.
void CudaBackend::copy_from_host(const void* src, View dst) {
  if (dst.bytes() == 0) return;
  if (dst.device == Device::kCpu) {
    std::memcpy(dst.data, src, dst.bytes());
    return;
  }
  CUDA_CHECK(cudaMemcpyAsync(dst.data, src, dst.bytes(), cudaMemcpyHostToDevice, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void CudaBackend::copy(View dst, View src) {
  COMPACTOR_ASSERT(dst.shape == src.shape && dst.dtype == src.dtype, "copy (cuda): {} {} -> {} {}", src.shape.str(),
                   dtype_name(src.dtype), dst.shape.str(), dtype_name(dst.dtype));
  if (src.bytes() == 0) return;
  CUDA_CHECK(cudaMemcpyAsync(dst.data, src.data, src.bytes(), cudaMemcpyDefault, stream_));
}

void CudaBackend::synchronize() { CUDA_CHECK(cudaStreamSynchronize(stream_)); }

// ---- host argument uploads (stream-ordered: a later upload waits for earlier kernels) ----

CudaBackend::Batch CudaBackend::upload_batch(const BatchLayout& layout) {
  COMPACTOR_ASSERT(layout.batch >= 1 && layout.tokens >= 0, "CUDA backend: bad batch layout B={} T={}", layout.batch,
                   layout.tokens);
  Batch b;
  b.past.resize(layout.batch);
  for (int i = 0; i < layout.batch; ++i) b.past[i] = layout.past(i);
  if (device_args_.past != nullptr) {  // decode loop: the device copy is the truth
    b.dev = DeviceBatch{layout.batch, layout.tokens, b.past.data(), device_args_.past, device_args_.max_keys};
    return b;
  }
  // The offsets rarely change between the ops of one forward; upload only when they do.
  if (b.past != past_uploaded_ || past_.device_data() == nullptr) {
    past_.upload(b.past.data(), b.past.size() * sizeof(int32_t), stream_);
    past_uploaded_ = b.past;
  }
  b.dev = DeviceBatch{layout.batch, layout.tokens, b.past.data(), static_cast<const int32_t*>(past_.device_data())};
  return b;
}

const float* CudaBackend::upload_inv_freq(const float* inv_freq, int head_dim) {
  COMPACTOR_ASSERT(inv_freq != nullptr && head_dim >= 2, "rope: inv_freq is null or head_dim {} < 2", head_dim);
  const size_t n = static_cast<size_t>(head_dim / 2);
  if (inv_freq_uploaded_.size() != n || std::memcmp(inv_freq_uploaded_.data(), inv_freq, n * sizeof(float)) != 0) {
    inv_freq_.upload(inv_freq, n * sizeof(float), stream_);
    inv_freq_uploaded_.assign(inv_freq, inv_freq + n);
  }
  return static_cast<const float*>(inv_freq_.device_data());
}

// ---- ops ----

void CudaBackend::embedding(View out, const int32_t* ids, View table) {
  if (device_args_.ids != nullptr) {  // decode loop: ids were sampled on the device
    check(embedding_cuda(out, device_args_.ids, table, stream_));
    return;
  }
  check_host_ids("embedding", "ids", ids, out.rows(), table.rows());
  const void* ids_dev = ids_.upload(ids, static_cast<size_t>(out.rows()) * sizeof(int32_t), stream_);
  check(embedding_cuda(out, static_cast<const int32_t*>(ids_dev), table, stream_));
}

void CudaBackend::rms_norm(View out, View x, View weight, float eps) {
  check(rms_norm_cuda(out, x, weight, eps, stream_));
}

void CudaBackend::add_rms_norm(View out, View residual, View delta, View weight, float eps) {
  check(add_rms_norm_cuda(out, residual, delta, weight, eps, stream_));
}

void CudaBackend::add(View x, View delta) { check(add_cuda(x, delta, stream_)); }

// Quantized weights: the fused kernel (qgemv.cuh) up to kQgemvAutoMaxRows rows; otherwise (and
// for weights it cannot repack) they are dequantized into a reused scratch buffer, then
// multiplied densely.
void CudaBackend::matmul(View out, View x, const LinearWeight& w) {
  if (!w.quantized()) {
    check(matmul_cuda(out, x, w, cublas_, stream_, options_.matmul_kernel == MatmulKernel::kAuto));
    return;
  }
  if (const QgemvWeight* q = fused_quantized(w, x)) {
    run_qgemv(out, x, *q, w.bias, /*accumulate=*/false);
    return;
  }
  const Shape shape{w.out_features, w.in_features};
  const View dense{dequant_.reserve(shape.numel() * dtype_size(x.dtype)), shape, x.dtype, Device::kCuda};
  check(dequantize_cuda(dense, w, stream_));
  LinearWeight dense_w;
  format_from_dtype(x.dtype, &dense_w.format);
  dense_w.out_features = w.out_features;
  dense_w.in_features = w.in_features;
  dense_w.weight = dense;
  dense_w.bias = w.bias;
  check(matmul_cuda(out, x, dense_w, cublas_, stream_, options_.matmul_kernel == MatmulKernel::kAuto));
}

void CudaBackend::rope(View x, int n_heads, int head_dim, const float* inv_freq, const BatchLayout& layout) {
  const float* freq = upload_inv_freq(inv_freq, head_dim);
  const Batch batch = upload_batch(layout);
  check(rope_cuda(x, n_heads, head_dim, freq, batch.dev, stream_));
}

void CudaBackend::kv_store(View k_cache, View v_cache, View k, View v, const BatchLayout& layout) {
  const Batch batch = upload_batch(layout);
  check(kv_store_cuda(k_cache, v_cache, k, v, batch.dev, stream_));
}

void CudaBackend::attention(View out, View q, View k_cache, View v_cache, const AttentionParams& p,
                            const BatchLayout& layout) {
  const Batch batch = upload_batch(layout);
  const AttentionPlan plan = plan_attention(p, batch.dev, sm_count_, options_.attention_splits);
  float* ws = nullptr;
  if (plan.workspace_floats > 0) ws = static_cast<float*>(attention_workspace_.reserve(plan.workspace_floats * sizeof(float)));
  int* counters = nullptr;
  if (plan.counter_ints > 0)
    counters = static_cast<int*>(attention_counters_.reserve_zeroed(plan.counter_ints * sizeof(int), stream_));
  const AttentionVariant variant = options_.attention_kernel == AttentionKernel::kCudaCores     ? AttentionVariant::kCudaCores
                                   : options_.attention_kernel == AttentionKernel::kTensorCores ? AttentionVariant::kTensorCores
                                                                                                : AttentionVariant::kAuto;
  check(attention_cuda(out, q, k_cache, v_cache, p, batch.dev, plan, ws, counters, stream_, variant));
}

void CudaBackend::swiglu(View out, View gate, View up) { check(swiglu_cuda(out, gate, up, stream_)); }

void CudaBackend::matmul_group(const View* outs, View x, const LinearWeight* const* ws, int n) {
  bool dense = options_.fuse == FuseOps::kOn && n <= 3;
  for (int i = 0; i < n && dense; ++i) dense = !ws[i]->quantized();
  if (!dense) {
    if (!(options_.fuse == FuseOps::kOn && matmul_group_quantized(outs, x, ws, n))) Backend::matmul_group(outs, x, ws, n);
    return;
  }
  check(matmul_group_cuda(outs, x, ws, n, cublas_, stream_, options_.matmul_kernel == MatmulKernel::kAuto));
}

void CudaBackend::matmul_add(View x, View a, const LinearWeight& w, View scratch) {
  if (options_.fuse == FuseOps::kOn && w.quantized() && w.bias.data == nullptr) {
    if (const QgemvWeight* q = fused_quantized(w, a)) {
      run_qgemv(x, a, *q, View{}, /*accumulate=*/true);
      return;
    }
  }
  if (options_.fuse == FuseOps::kOff || w.quantized() || w.bias.data != nullptr) {
    Backend::matmul_add(x, a, w, scratch);
    return;
  }
  check(matmul_cuda(x, a, w, cublas_, stream_, options_.matmul_kernel == MatmulKernel::kAuto, /*accumulate=*/true));
}

// Decode sizes: SwiGLU is computed while the down projection's GEMV loads its input.
void CudaBackend::swiglu_matmul_add(View x, View gate, View up, const LinearWeight& w, View act, View scratch) {
  const LinearWeight* ws[] = {&w};
  if (options_.fuse == FuseOps::kOff || options_.matmul_kernel != MatmulKernel::kAuto || w.bias.data != nullptr ||
      !gemv_group_supported(gate, ws, 1)) {
    Backend::swiglu_matmul_add(x, gate, up, w, act, scratch);
    return;
  }
  GemvPrologue pro;
  pro.input = GemvInput::kSwiglu;
  pro.up = up;
  check(gemv_group_cuda(&x, gate, ws, 1, pro, /*accumulate=*/true, stream_));
}

void CudaBackend::rope_kv_store(View q, View k, View v, View k_cache, View v_cache, int heads, int kv_heads,
                                int head_dim, const float* inv_freq, const BatchLayout& layout) {
  if (options_.fuse == FuseOps::kOff || !rope_kv_store_supported(q, k, v, k_cache, v_cache, head_dim)) {
    Backend::rope_kv_store(q, k, v, k_cache, v_cache, heads, kv_heads, head_dim, inv_freq, layout);
    return;
  }
  const float* freq = upload_inv_freq(inv_freq, head_dim);
  const Batch batch = upload_batch(layout);
  check(rope_kv_store_cuda(q, k, v, k_cache, v_cache, heads, kv_heads, head_dim, freq, batch.dev, stream_));
}

void CudaBackend::cross_entropy(float* nll, View logits, const int32_t* targets) {
  const int64_t rows = logits.rows();
  check_host_ids("cross_entropy", "targets", targets, rows, logits.cols());
  float* dev = static_cast<float*>(nll_.reserve(static_cast<size_t>(rows) * sizeof(float)));
  const void* targets_dev = targets_.upload(targets, static_cast<size_t>(rows) * sizeof(int32_t), stream_);
  check(cross_entropy_cuda(dev, logits, static_cast<const int32_t*>(targets_dev), stream_));
  if (rows == 0) return;
  CUDA_CHECK(cudaMemcpyAsync(nll, dev, rows * sizeof(float), cudaMemcpyDeviceToHost, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

// ---- fused quantized matmul (qgemv.cuh): repacked weights, cached per packed weight ----

// A cached repack stays valid while each packed tensor it was made from is the same live device
// allocation (same address and allocation serial); entries of freed weights are dropped at the
// next insertion. ok == false records a weight the repack rejected (the dequantize path runs).
// The packed tensors a repack reads (qgemv_sources).
constexpr int kQgemvSources = 6;

struct CudaBackend::QgemvCache {
  struct Entry {
    const void* sources[kQgemvSources] = {};  // qweight, scales, qzeros, g_idx, nested_scales, nested_offset
    uint64_t serials[kQgemvSources] = {};
    int64_t n = 0, k = 0;
    Format format = Format::kF32;
    int group = 0;
    bool ok = false;
    QgemvRepacked repacked;
    QgemvWeight view;
  };
  std::unordered_map<const void*, Entry> entries;  // keyed by qweight.data
};

namespace {

void qgemv_sources(const LinearWeight& w, const void* (&src)[kQgemvSources], uint64_t (&serial)[kQgemvSources]) {
  const View* views[kQgemvSources] = {&w.qweight, &w.scales, &w.qzeros, &w.g_idx, &w.nested_scales, &w.nested_offset};
  for (int i = 0; i < kQgemvSources; ++i) {
    src[i] = views[i]->data;
    serial[i] = src[i] != nullptr ? allocation_serial(src[i]) : 0;
  }
}

}  // namespace

const QgemvWeight* CudaBackend::fused_quantized(const LinearWeight& w, View x) {
  const bool tc = options_.quant_kernel == QuantKernel::kTensorCores &&
                  tc_layout_supported(w.bits(), w.format == Format::kNF4, w.group_size, w.g_idx.data != nullptr);
  // int4 (act-order too: x is staged in the repacked order) on the wgmma GEMM: every batch size.
  const bool gemm = tc && qgemm_wgmma_takes(w.bits(), w.format == Format::kNF4);
  const int64_t max_rows = gemm ? INT64_MAX : tc ? kQgemvTcAutoMaxRows : kQgemvAutoMaxRows;
  if (options_.matmul_kernel != MatmulKernel::kAuto || x.rows() < 1 || x.rows() > max_rows) return nullptr;
  const void* src[kQgemvSources];
  uint64_t serial[kQgemvSources];
  qgemv_sources(w, src, serial);
  for (int i = 0; i < kQgemvSources; ++i)
    if (src[i] != nullptr && serial[i] == 0) return nullptr;  // not a whole backend allocation: not cached
  if (!qgemv_cache_) qgemv_cache_ = std::make_shared<QgemvCache>();
  auto& entries = qgemv_cache_->entries;
  auto it = entries.find(src[0]);
  if (it != entries.end()) {
    const QgemvCache::Entry& e = it->second;
    if (std::equal(src, src + kQgemvSources, e.sources) && std::equal(serial, serial + kQgemvSources, e.serials) &&
        e.n == w.out_features && e.k == w.in_features && e.format == w.format && e.group == w.group_size)
      return e.ok ? &e.view : nullptr;
  }
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  CUDA_CHECK(cudaStreamIsCapturing(stream_, &capture));
  if (capture != cudaStreamCaptureStatusNone) return nullptr;  // a repack allocates and waits
  std::erase_if(entries, [](const auto& kv) {
    for (int i = 0; i < kQgemvSources; ++i)
      if (kv.second.sources[i] != nullptr && allocation_serial(kv.second.sources[i]) != kv.second.serials[i]) return true;
    return false;
  });
  QgemvCache::Entry e;
  std::copy(src, src + kQgemvSources, e.sources);
  std::copy(serial, serial + kQgemvSources, e.serials);
  e.n = w.out_features;
  e.k = w.in_features;
  e.format = w.format;
  e.group = w.group_size;
  auto repacked = qgemv_repack_cuda(w, stream_, tc ? QgemvKernel::kTensorCores : QgemvKernel::kCudaCores);
  if (repacked.is_ok()) {
    e.repacked = std::move(repacked).value();
    e.view = e.repacked.view();
    e.ok = true;
  }
  auto placed = entries.insert_or_assign(src[0], std::move(e)).first;
  return placed->second.ok ? &placed->second.view : nullptr;
}

// Quantized q/k/v or gate/up in one launch of the tensor-core kernel (qgemv_group_cuda) when every
// weight takes the fused path and they can share it; false (nothing run) otherwise.
bool CudaBackend::matmul_group_quantized(const View* outs, View x, const LinearWeight* const* ws, int n) {
  if (n < 2 || n > kQgemvMaxGroup) return false;
  const QgemvWeight* qs[kQgemvMaxGroup];
  View biases[kQgemvMaxGroup];
  for (int i = 0; i < n; ++i) {
    if (!ws[i]->quantized() || (qs[i] = fused_quantized(*ws[i], x)) == nullptr) return false;
    biases[i] = ws[i]->bias;
  }
  if (!qgemv_groupable(x, qs, n)) return false;
  check(qgemv_group_cuda(outs, x, qs, biases, n, stream_));
  return true;
}

void CudaBackend::run_qgemv(View out, View x, const QgemvWeight& q, View bias, bool accumulate) {
  const size_t bytes = qgemv_scratch_bytes(q, x.rows(), x.dtype, x.data);
  void* scratch = bytes == 0 ? nullptr : qgemv_scratch_.reserve(bytes);
  check(qgemv_cuda(out, x, q, bias, accumulate, scratch, stream_));
}

void CudaBackend::forget_repacked_weights() {
  if (!qgemv_cache_) return;
  synchronize();
  qgemv_cache_->entries.clear();
}

int64_t CudaBackend::repacked_bytes() const {
  int64_t total = 0;
  if (qgemv_cache_)
    for (const auto& kv : qgemv_cache_->entries) total += kv.second.ok ? kv.second.repacked.bytes() : 0;
  return total;
}

// ---- beyond the Backend interface ----

Status CudaBackend::fill_normal(View out, uint64_t stream_id, float mean, float stddev) {
  return fill_normal_cuda(out, stream_id, mean, stddev, stream_);
}

Status CudaBackend::sample(int32_t* ids, View logits, const SampleParams& p, const int32_t* step, int32_t* history,
                           int64_t history_stride) {
  return sample_cuda(ids, logits, p, step, history, history_stride, stream_);
}

Status CudaBackend::decode_advance(int32_t* past, int batch, int32_t* step) {
  return decode_advance_cuda(past, batch, step, stream_);
}

CudaGraph& CudaGraph::operator=(CudaGraph&& o) noexcept {
  if (this != &o) {
    if (exec_ != nullptr) (void)cudaGraphExecDestroy(exec_);
    exec_ = o.exec_;
    o.exec_ = nullptr;
  }
  return *this;
}

CudaGraph::~CudaGraph() {
  if (exec_ != nullptr) (void)cudaGraphExecDestroy(exec_);
}

// Thread-local mode: a forbidden call from this thread (a synchronisation, an allocation) fails
// the capture instead of silently running outside the graph.
Status CudaBackend::begin_capture() {
  CUDA_RETURN_IF_ERROR(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
  return Status::ok();
}

Result<CudaGraph> CudaBackend::end_capture() {
  cudaGraph_t graph = nullptr;
  const cudaError_t err = cudaStreamEndCapture(stream_, &graph);
  if (err != cudaSuccess || graph == nullptr) {
    (void)cudaGetLastError();
    if (graph != nullptr) (void)cudaGraphDestroy(graph);
    return Status(StatusCode::kInternal, fmt::format("CUDA graph capture failed: {}", cudaGetErrorString(err)));
  }
  cudaGraphExec_t exec = nullptr;
  const cudaError_t inst = cudaGraphInstantiate(&exec, graph, 0);
  (void)cudaGraphDestroy(graph);
  if (inst != cudaSuccess) {
    (void)cudaGetLastError();
    return Status(StatusCode::kInternal, fmt::format("CUDA graph instantiation failed: {}", cudaGetErrorString(inst)));
  }
  return CudaGraph(exec);
}

Status CudaBackend::replay(const CudaGraph& graph) {
  if (!graph.valid()) return invalid_argument("replay: empty CUDA graph");
  CUDA_RETURN_IF_ERROR(cudaGraphLaunch(graph.exec(), stream_));
  return Status::ok();
}

Result<float> CudaBackend::time_ms(const std::function<Status()>& fn) {
  if (timer_start_ == nullptr) {
    CUDA_RETURN_IF_ERROR(cudaEventCreate(&timer_start_));
    CUDA_RETURN_IF_ERROR(cudaEventCreate(&timer_stop_));
  }
  CUDA_RETURN_IF_ERROR(cudaEventRecord(timer_start_, stream_));
  RETURN_IF_ERROR(fn());
  CUDA_RETURN_IF_ERROR(cudaEventRecord(timer_stop_, stream_));
  CUDA_RETURN_IF_ERROR(cudaEventSynchronize(timer_stop_));
  float ms = 0.f;
  CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&ms, timer_start_, timer_stop_));
  return ms;
}

CudaMemoryInfo CudaBackend::memory_info() const {
  CudaMemoryInfo info;
  size_t free_b = 0, total_b = 0;
  if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) (void)cudaGetLastError();
  info.free_bytes = static_cast<int64_t>(free_b);
  info.total_bytes = static_cast<int64_t>(total_b);
  AllocStats& s = alloc_stats();
  std::lock_guard<std::mutex> lock(s.mu);
  info.allocated_bytes = s.live;
  info.peak_allocated_bytes = s.peak;
  return info;
}

void CudaBackend::reset_peak_memory() {
  AllocStats& s = alloc_stats();
  std::lock_guard<std::mutex> lock(s.mu);
  s.peak = s.live;
}

}  // namespace compactor
