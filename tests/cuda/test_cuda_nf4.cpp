// NF4 with double-quantized scales (formats/nf4.h) on the GPU, against the CPU reference
// dequantize_nf4_ref:
//   - the fused kernel (qgemv_repack_cuda + qgemv_cuda, CUDA cores: levels from shared memory, f32
//     absmax per block) for M in {1, 3, 16, 64, 200} × odd shapes (N = 4097, K not a multiple of
//     the block or of 128) × block sizes 64 and 128;
//   - dequantize_cuda (the M > 8 path) element for element;
//   - CudaBackend::matmul around its fused / dequantize + cuBLAS switch, and a block size the
//     repack does not take (100: not a power of two) falling back to dequantize;
//   - bad tensors rejected with the tensor's name.
// bf16 and f16 activations. Run (GPU machine): build-*/tests/test_cuda_nf4   or   ctest -L gpu
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "backend/cpu/cpu_nf4.h"
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/dequant.cuh"
#include "backend/cuda/qgemv.cuh"
#include "cuda/cuda_test_util.h"
#include "cuda/qgemm_check.h"
#include "formats/nf4.h"

namespace compactor {
namespace {

using test::close_to;
using test::dequant_coef;

// Host NF4 weight of N(0, 0.05²) values, packed, and its reference dequantization.
struct HostNF4 {
  PackedNF4 packed;
  std::vector<float> w;  // [N, K] dequantize_nf4_ref
};

HostNF4 random_nf4(int64_t n, int64_t k, int block, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.f, 0.05f);
  std::vector<float> w(n * k);
  for (float& v : w) v = d(rng);
  auto packed = pack_nf4(quantize_nf4(w.data(), n, k, block));
  COMPACTOR_ASSERT(packed.is_ok(), "{}", packed.status().message());
  HostNF4 h{std::move(packed).value(), std::vector<float>(n * k)};
  dequantize_nf4_ref(h.packed.ref(), h.w.data());
  return h;
}

class CudaNF4 : public test::CudaBackendTest {
 protected:
  // The device LinearWeight of a packed NF4 linear; `keep` owns the device tensors.
  LinearWeight upload_nf4(const PackedNF4& p, std::vector<Tensor>& keep) {
    LinearWeight w = linear_weight_of(p);
    for (View* v : {&w.qweight, &w.scales, &w.nested_scales, &w.nested_offset}) {
      keep.push_back(upload(*v));
      *v = keep.back().view();
    }
    return w;
  }
};

const std::pair<int64_t, int64_t> kShapes[] = {{96, 384}, {37, 200}, {4097, 128}, {130, 1000}};

TEST_P(CudaNF4, FusedKernelMatchesReferenceEveryShapeBlockAndM) {
  uint32_t seed = 1;
  for (int block : {64, 128})
    for (const auto& [n, k] : kShapes) {
      const HostNF4 h = random_nf4(n, k, block, seed++);
      std::vector<Tensor> keep;
      const LinearWeight dev_w = upload_nf4(h.packed, keep);
      for (QgemvKernel kernel : {QgemvKernel::kCudaCores, QgemvKernel::kTensorCores}) {
      auto repacked = qgemv_repack_cuda(dev_w, be_->stream(), kernel);
      ASSERT_TRUE(repacked.is_ok()) << repacked.status().message();
      ASSERT_TRUE(repacked->plan.nf4);
      ASSERT_EQ(repacked->tc.defined(), kernel == QgemvKernel::kTensorCores);
      for (int64_t m : {1, 3, 16, 64, 200}) {
        auto [x, xf] = random_x(m, k, seed++);
        const test::Reference ref = test::reference(xf, h.w, m, n, k);
        const std::string what = fmt::format("nf4 {} block {} [N {}, K {}] M {} {}",
                                             kernel == QgemvKernel::kTensorCores ? "tensor cores" : "cuda cores", block,
                                             n, k, m, dtype_name(act()));
        const size_t bytes = qgemv_scratch_bytes(repacked->view(), m, act(), x.data());
        Tensor scratch;
        if (bytes > 0) scratch = be_->alloc(Shape{static_cast<int64_t>(bytes)}, DType::kU8);
        Tensor out = be_->alloc(Shape{m, n}, act());
        const Status st = qgemv_cuda(out, x, repacked->view(), View{}, false, bytes > 0 ? scratch.data() : nullptr,
                                     be_->stream());
        ASSERT_TRUE(st.is_ok()) << what << ": " << st.message();
        // Tensor cores: the levels are rounded to the activation dtype (bf16: 2^-9 relative).
        EXPECT_TRUE(close_to(download(out), ref.y, ref.magnitude, act(), what,
                             kernel == QgemvKernel::kTensorCores ? dequant_coef(act()) : test::kFusedCoef));
      }
      }
    }
}

TEST_P(CudaNF4, DequantizeMatchesReferenceElementwise) {
  uint32_t seed = 50;
  for (int block : {64, 100})
    for (const auto& [n, k] : kShapes) {
      const HostNF4 h = random_nf4(n, k, block, seed++);
      std::vector<Tensor> keep;
      const LinearWeight dev_w = upload_nf4(h.packed, keep);
      Tensor out = be_->alloc(Shape{n, k}, act());
      const Status st = dequantize_cuda(out, dev_w, be_->stream());
      ASSERT_TRUE(st.is_ok()) << st.message();
      const std::vector<float> got = download(out);
      int bad = 0;
      for (int64_t i = 0; i < n * k; ++i) {
        // One rounding of the f32 value to the activation dtype.
        const float want = h.w[i];
        if (std::fabs(got[i] - want) > test::round_tol(act()) / 2 * std::fabs(want) + 1e-7f && bad++ < 4)
          ADD_FAILURE() << "block " << block << " [" << n << ", " << k << "] element " << i << ": " << got[i]
                        << " want " << want;
      }
      EXPECT_EQ(bad, 0);
    }
}

// M from 1 past the fused limit, through CudaBackend::matmul; block 100 cannot be repacked (not a
// power of two) and runs dequantize + cuBLAS at every M.
TEST_P(CudaNF4, BackendMatmulAgreesWithReferenceOnBothPaths) {
  uint32_t seed = 90;
  for (int block : {64, 100}) {
    const int64_t n = 260, k = 512;
    const HostNF4 h = random_nf4(n, k, block, seed++);
    std::vector<Tensor> keep;
    const LinearWeight dev_w = upload_nf4(h.packed, keep);
    for (int64_t m : std::initializer_list<int64_t>{1, 2, kQgemvAutoMaxRows, kQgemvAutoMaxRows + 1, 64, 200}) {
      auto [x, xf] = random_x(m, k, seed++);
      const test::Reference ref = test::reference(xf, h.w, m, n, k);
      Tensor out = be_->alloc(Shape{m, n}, act());
      be_->matmul(out, x, dev_w);
      const std::string what = fmt::format("matmul nf4 block {} M {} {}", block, m, dtype_name(act()));
      EXPECT_TRUE(close_to(download(out), ref.y, ref.magnitude, act(), what, dequant_coef(act())));
    }
  }
}

TEST_P(CudaNF4, BadTensorsAreRejectedByName) {
  const HostNF4 h = random_nf4(64, 128, 64, 7);
  std::vector<Tensor> keep;
  LinearWeight w = upload_nf4(h.packed, keep);
  LinearWeight wrong = w;
  wrong.scales = keep[0].view();  // i32 qweight where the u8 scales belong
  auto r = qgemv_repack_cuda(wrong, be_->stream());
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("scales"), std::string::npos) << r.status().message();
  wrong = w;
  wrong.nested_scales = View{};
  Tensor out = be_->alloc(Shape{64, 128}, act());
  const Status st = dequantize_cuda(out, wrong, be_->stream());
  ASSERT_FALSE(st.is_ok());
  EXPECT_NE(st.message().find("nested_scales"), std::string::npos) << st.message();
}

INSTANTIATE_TEST_SUITE_P(Act, CudaNF4, ::testing::Values(DType::kBF16, DType::kF16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

}  // namespace
}  // namespace compactor
