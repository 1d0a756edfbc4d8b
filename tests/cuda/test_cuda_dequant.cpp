// Packed intN weights on the CUDA backend against the CPU references: dequantize_cuda vs
// dequantize_ref per element (every bits × group × act-order, odd shapes), CudaBackend::matmul with
// a quantized weight vs matmul_quantized_ref, and a compressed stories260K (in-test RTN, mixed
// formats) on CUDA vs the CPU backend; bf16 and f16 activations. Launcher argument errors are
// checked without a GPU; everything else skips (GTEST_SKIP) when no GPU is present.
// Run (GPU machine): build-*/tests/test_cuda_dequant   or   ctest -L gpu
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>

#include <cmath>
#include <random>
#include <vector>

#include "cuda/cuda_test_util.h"
#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/cpu_qmatmul.h"
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/dequant.cuh"
#include "compress/compressed_model.h"
#include "formats/quant_pack.h"
#include "support/compare.h"
#include "support/fixtures.h"
#include "support/quant_fixtures.h"

namespace compactor {
namespace {


// Per-element bound of one rounding of an f32 value to the activation dtype (half an ulp is
// 2^-9 for bf16, 2^-12 for f16), with 2x headroom.
double round_tol(DType d) { return d == DType::kBF16 ? 4e-3 : 5e-4; }
// ‖gpu − ref‖ / ‖ref‖ of a matmul (as test_cuda_ops) and of whole-model logits (as test_cuda_model).
double matmul_tol(DType d) { return d == DType::kBF16 ? 1e-2 : 2e-3; }
double logits_tol(DType d) { return d == DType::kBF16 ? 5e-2 : 1e-2; }

QuantizedLinear random_linear(int bits, int group, bool act_order, int64_t n, int64_t k, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.f, 0.05f);
  std::vector<float> w(n * k);
  for (float& x : w) x = d(rng);
  return test::rtn_quantize(w, n, k, test::RtnSpec{{bits, group, false}, act_order}, seed);
}

class CudaDequant : public test::CudaBackendTest {
 protected:
  // The packed tensors of `p` on the device (kept alive in owned_).
  LinearWeight upload_weight(const PackedLinear& p, View bias_host) {
    return CudaBackendTest::upload_weight(p, owned_, bias_host);
  }

  std::vector<Tensor> owned_;
};

struct Case {
  int bits, group;
  bool act_order;
  int64_t n, k;
};
const Case kCases[] = {{8, 0, false, 33, 100},  {8, 128, false, 64, 256}, {4, 32, false, 37, 200},
                       {4, 128, false, 130, 96}, {4, 64, true, 96, 256},   {3, 32, false, 45, 131},
                       {3, 128, true, 64, 384},  {2, 16, false, 31, 64},   {2, 64, true, 7, 1000}};

TEST_P(CudaDequant, DequantizeMatchesReferencePerElement) {
  uint32_t seed = 1;
  for (const Case& c : kCases) {
    const std::string what = fmt::format("int{} group {} act {} [{}, {}] {}", c.bits, c.group, c.act_order, c.n, c.k,
                                         dtype_name(act()));
    auto packed = pack_linear(random_linear(c.bits, c.group, c.act_order, c.n, c.k, seed++));
    ASSERT_TRUE(packed.is_ok()) << packed.status().message();
    std::vector<float> ref(c.n * c.k);
    dequantize_ref(packed->ref(), ref.data());
    const LinearWeight w = upload_weight(*packed, View{});
    Tensor out = be_->alloc(Shape{c.n, c.k}, act());
    const Status st = dequantize_cuda(out, w, be_->stream());
    ASSERT_TRUE(st.is_ok()) << what << ": " << st.message();
    const std::vector<float> got = download(out);
    int bad = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
      if (std::fabs(got[i] - ref[i]) <= round_tol(act()) * std::fabs(ref[i])) continue;
      if (bad++ < 5)
        ADD_FAILURE() << what << ": element [" << i / c.k << ", " << i % c.k << "] = " << got[i] << ", reference "
                      << ref[i];
    }
    EXPECT_EQ(bad, 0) << what;
  }
}

TEST_P(CudaDequant, MatmulWithQuantizedWeightMatchesReference) {
  uint32_t seed = 100;
  for (const Case& c : kCases) {
    auto packed = pack_linear(random_linear(c.bits, c.group, c.act_order, c.n, c.k, seed++));
    ASSERT_TRUE(packed.is_ok());
    std::vector<float> bias(c.n);
    for (int64_t i = 0; i < c.n; ++i) bias[i] = 0.01f * static_cast<float>(i % 7);
    const View bias_host{bias.data(), Shape{c.n}, DType::kF32, Device::kCpu};
    const LinearWeight host_w = linear_weight_of(*packed, bias_host);
    const LinearWeight dev_w = upload_weight(*packed, bias_host);
    for (int64_t m : {int64_t{1}, int64_t{3}, int64_t{64}}) {
      const std::string what = fmt::format("int{} group {} act {} [{}, {}] M {} {}", c.bits, c.group, c.act_order,
                                           c.n, c.k, m, dtype_name(act()));
      std::mt19937 rng(seed++);
      std::normal_distribution<float> d(0.f, 1.f);
      std::vector<float> x(m * c.k);
      for (float& v : x) v = d(rng);
      Tensor x_act = Tensor::empty(Shape{m, c.k}, act());
      convert_from_f32(x.data(), x.size(), act(), x_act.data());
      convert_to_f32(x_act.data(), act(), x.size(), x.data());  // the reference sees the rounded input
      std::vector<float> ref(m * c.n);
      matmul_quantized_ref(View{ref.data(), Shape{m, c.n}}, View{x.data(), Shape{m, c.k}}, host_w);
      Tensor out = be_->alloc(Shape{m, c.n}, act());
      be_->matmul(out, upload(x_act), dev_w);
      EXPECT_LT(test::rel_l2_error(download(out), ref), matmul_tol(act())) << what;
    }
  }
}

test::RtnSpec mixed_spec(const std::string& name) {
  if (name.ends_with("o_proj")) return {{8, 0, true}, false};
  if (name.ends_with("gate_proj") || name.ends_with("up_proj")) return {{3, 16, false}, true};
  if (name.ends_with("down_proj")) return {{2, 32, true}, false};
  return {{4, 32, false}, false};
}

TEST_P(CudaDequant, CompressedStoriesOnCudaMatchesCpu) {
  CpuBackend cpu;
  auto base = Model::load(test::model_dir("stories260K"), cpu);
  ASSERT_TRUE(base.is_ok()) << base.status().message();
  const auto quantized = test::rtn_quantize_model(**base, mixed_spec, /*lm_head=*/true);
  const auto tmp = test::make_temp_dir("compactor-cuda-dequant");
  const auto dir = tmp / "stories-mixed";
  const Status saved = save_compressed_model(**base, quantized, {{"recipe", "test"}}, dir);
  ASSERT_TRUE(saved.is_ok()) << saved.message();
  auto on_cpu = Model::load(dir, cpu);
  auto on_gpu = Model::load(dir, *be_);
  ASSERT_TRUE(on_cpu.is_ok()) << on_cpu.status().message();
  ASSERT_TRUE(on_gpu.is_ok()) << on_gpu.status().message();
  const std::vector<int32_t> ids = {1, 403, 261, 378, 300, 16, 85, 423, 270, 9, 33, 5};
  auto logits = [&](Model& m) {
    KvCache cache = m.make_kv_cache(1, static_cast<int>(ids.size()));
    auto out = m.forward({ids.data(), BatchLayout{1, static_cast<int>(ids.size())}, LogitsMode::kAll}, cache);
    EXPECT_TRUE(out.is_ok()) << out.status().message();
    std::vector<float> v(out->numel());
    copy_to_host_f32(m.backend(), *out, v.data());
    return v;
  };
  const double err = test::rel_l2_error(logits(**on_gpu), logits(**on_cpu));
  EXPECT_LT(err, logits_tol(act())) << "compressed stories260K logits, cuda " << dtype_name(act()) << " vs cpu";
  std::filesystem::remove_all(tmp);
}

INSTANTIATE_TEST_SUITE_P(Act, CudaDequant, ::testing::Values(DType::kBF16, DType::kF16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

// Argument checks run before any launch, so they need no GPU.
TEST(CudaDequantArgs, HostViewsAndDenseFormatsAreRejected) {
  auto packed = pack_linear(random_linear(4, 32, false, 8, 64, 3));
  ASSERT_TRUE(packed.is_ok());
  const LinearWeight host_w = linear_weight_of(*packed);
  std::vector<uint16_t> never_written(8 * 64);  // labelled CUDA: every case fails its checks first
  View out{never_written.data(), Shape{8, 64}, DType::kBF16, Device::kCuda};
  Status st = dequantize_cuda(out, host_w, nullptr);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.message();
  EXPECT_NE(st.message().find("qweight"), std::string::npos) << st.message();
  LinearWeight dense;
  st = dequantize_cuda(out, dense, nullptr);
  EXPECT_NE(st.message().find("not quantized"), std::string::npos) << st.message();
  LinearWeight wrong_group = host_w;
  for (View* v : {&wrong_group.qweight, &wrong_group.scales, &wrong_group.qzeros}) v->device = Device::kCuda;
  wrong_group.group_size = 16;
  st = dequantize_cuda(out, wrong_group, nullptr);
  EXPECT_NE(st.message().find("dequantize.scales"), std::string::npos) << st.message();
}

}  // namespace
}  // namespace compactor
