// Helpers shared by the GPU tests (tests/cuda, ctest label gpu): header-only, because only the
// CUDA build compiles this ring and tests/support must build without CUDA.
#pragma once

#include <gtest/gtest.h>

#include <cuda_runtime.h>

#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "backend/cpu/cpu_qmatmul.h"
#include "backend/cuda/cuda_backend.h"
#include "model/model.h"
#include "support/fixtures.h"

namespace compactor::test {

// True when a CUDA device is usable; clears the error a missing driver or device leaves behind.
inline bool gpu_present() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) (void)cudaGetLastError();
  return err == cudaSuccess && count > 0;
}

// A CUDA backend with the parameter's activation dtype; skips without a GPU.
class CudaBackendTest : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override {
    if (!gpu_present()) GTEST_SKIP() << "no CUDA device";
    auto be = CudaBackend::create(backend_options());
    ASSERT_TRUE(be.is_ok()) << be.status().message();
    be_ = std::move(be).value();
  }
  // The options SetUp makes be_ with (a fixture may change the defaults).
  virtual CudaBackendOptions backend_options() const { return CudaBackendOptions{GetParam()}; }
  DType act() const { return GetParam(); }

  Tensor upload(View host) {
    Tensor t = be_->alloc(host.shape, host.dtype);
    be_->copy_from_host(host.data, t);
    return t;
  }
  std::vector<float> download(View dev) {
    std::vector<float> out(dev.numel());
    copy_to_host_f32(*be_, dev, out.data());
    return out;
  }
  // Random N(0, 1) x [m, k] rounded to the activation dtype: the device copy and its exact f32 values.
  std::pair<Tensor, std::vector<float>> random_x(int64_t m, int64_t k, uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> d(0.f, 1.f);
    std::vector<float> x(m * k);
    for (float& v : x) v = d(rng);
    Tensor host = Tensor::empty(Shape{m, k}, act());
    convert_from_f32(x.data(), x.size(), act(), host.data());
    convert_to_f32(host.data(), act(), x.size(), x.data());
    return {upload(host), x};
  }
  // The packed tensors of `p` (and the bias) as device tensors, owned by `keep`.
  LinearWeight upload_weight(const PackedLinear& p, std::vector<Tensor>& keep, View bias_host = View{}) {
    LinearWeight w = linear_weight_of(p, bias_host);
    for (View* v : {&w.qweight, &w.scales, &w.qzeros, &w.g_idx, &w.bias}) {
      if (v->data == nullptr) continue;
      keep.push_back(upload(*v));
      *v = keep.back().view();
    }
    return w;
  }

  std::unique_ptr<CudaBackend> be_;
};

// One fixture model (name, activation dtype) loaded on the GPU and on the CPU; skips without a GPU.
class CudaVsCpuModelTest : public ::testing::TestWithParam<std::tuple<std::string, DType>> {
 protected:
  void SetUp() override {
    if (!gpu_present()) GTEST_SKIP() << "no CUDA GPU on this machine: GPU tests skipped";
    CudaBackendOptions o;
    o.activation_dtype = dtype();
    auto be = CudaBackend::create(o);
    ASSERT_TRUE(be.is_ok()) << be.status().message();
    gpu_be_ = std::move(be).value();
    cpu_be_ = std::move(make_backend(BackendKind::kCpu)).value();
    const auto dir = model_dir(name());
    auto g = Model::load(dir, *gpu_be_);
    ASSERT_TRUE(g.is_ok()) << g.status().message();
    gpu_ = std::move(g).value();
    auto c = Model::load(dir, *cpu_be_);
    ASSERT_TRUE(c.is_ok()) << c.status().message();
    cpu_ = std::move(c).value();
  }
  const std::string& name() const { return std::get<0>(GetParam()); }
  DType dtype() const { return std::get<1>(GetParam()); }

  std::unique_ptr<CudaBackend> gpu_be_;
  std::unique_ptr<Backend> cpu_be_;
  std::unique_ptr<Model> gpu_, cpu_;
};

}  // namespace compactor::test
