// Calibration statistics on the GPU (hessian.h, InputStats::on_device): XᵀX accumulated by cuBLAS
// from the activations on the device (backend/cuda/hessian_accumulate.cuh) and |x| column sums in
// f64; nothing crosses to the host until a host compressor asks for gram() or mean_abs().
// Test: build-cuda/tests/test_cuda_gptq (on a GPU machine).
#include "compress/cuda_context.h"
#include "compress/hessian.h"

#ifdef COMPACTOR_HAS_CUDA
#include "backend/cuda/hessian_accumulate.cuh"
#endif

namespace compactor {

struct InputStats::DeviceState {
  std::shared_ptr<CudaCompressContext> ctx;
  Tensor gram;     // [K, K] f32
  Tensor abs_sum;  // [K] f64
};

Status InputStats::add(Backend& backend, View x) {
  if (x.rows() == 0) return Status::ok();
  const int64_t k = x.numel() / x.rows();
  if (k != k_) return invalid_argument("InputStats::add: rows of {} values, expected {}", k, k_);
  if (device_ == nullptr) {
    std::vector<float> buffer;
    if (x.device == Device::kCpu && x.dtype == DType::kF32) {
      add(x.as<float>(), x.rows());
    } else {
      buffer.resize(x.numel());
      copy_to_host_f32(backend, x, buffer.data());
      add(buffer.data(), x.rows());
    }
    return Status::ok();
  }
#ifdef COMPACTOR_HAS_CUDA
  RETURN_IF_ERROR(gram_accumulate_cuda(device_->ctx->cublas(), x, device_->gram.as<float>(),
                                       device_->abs_sum.as<double>(), device_->ctx->stream()));
  tokens_ += x.rows();
  gram_.clear();  // host copies are stale now
  abs_sum_.clear();
  return Status::ok();
#else
  return unsupported("InputStats::add: device statistics without CUDA");
#endif
}

View InputStats::device_gram() const {
  COMPACTOR_ASSERT(device_ != nullptr, "device_gram: the statistics are on the host");
  return device_->gram.view();
}

#ifdef COMPACTOR_HAS_CUDA

Result<InputStats> InputStats::on_device(std::shared_ptr<CudaCompressContext> ctx, int64_t in_features) {
  if (ctx == nullptr) return invalid_argument("InputStats::on_device: no GPU context");
  InputStats s;
  s.k_ = in_features;
  s.device_ = std::make_shared<DeviceState>();
  try {
    s.device_->gram = Tensor::zeros(Shape{in_features, in_features}, DType::kF32, Device::kCuda);
    s.device_->abs_sum = Tensor::zeros(Shape{in_features}, DType::kF64, Device::kCuda);
  } catch (const std::bad_alloc&) {
    return Status(StatusCode::kOutOfMemory,
                  fmt::format("InputStats: out of GPU memory for a {}x{} f32 Gram matrix", in_features, in_features));
  }
  s.device_->ctx = std::move(ctx);
  return s;
}

void InputStats::download() {
  Backend& be = device_->ctx->backend();
  gram_.resize(k_ * k_);
  abs_sum_.resize(k_);
  be.copy_to_host(device_->gram.view(), gram_.data());
  be.copy_to_host(device_->abs_sum.view(), abs_sum_.data());
  mirrored_ = true;
}

#else

Result<InputStats> InputStats::on_device(std::shared_ptr<CudaCompressContext>, int64_t) {
  return unsupported("InputStats::on_device: this build of compactor has no CUDA backend");
}

void InputStats::download() { COMPACTOR_ASSERT(false, "InputStats: device statistics without CUDA"); }

#endif

}  // namespace compactor
