// The fused quantized GEMV/skinny GEMM (backend/cuda/qgemv.cuh) against the CPU reference, for
// both kernels (CUDA cores: every format; tensor cores: int4, int8 without act-order):
//   - the device repacks are byte-identical to repack_linear_ref / repack_tc_ref
//     (formats/quant_repack.h);
//   - qgemv_cuda vs x · dequantize_ref(w)ᵀ in double for int8/4/3/2 × group 32/64/128/per-channel
//     × sym/asym × act-order (int4) × M in {1, 3, 16, 64, 200} × odd shapes (N = 4097, K not a
//     multiple of 128 or of the group), plus bias and accumulate (out +=); N = 20000 at M = 1, 2
//     (many row tiles: the tensor cores' 4-warp blocks, the CUDA cores' persistent grid);
//   - grouped launches (q/k/v-like weights in one launch) match each weight;
//   - the wgmma GEMM (int4 above 32 rows, compute capability 9.0) matches the reference and the
//     per-lane kernel;
//   - CudaBackend::matmul / matmul_add pick the fused kernel (M <= kQgemvAutoMaxRows / kQgemvTcAutoMaxRows) or dequantize + cuBLAS and
//     both agree with the reference; a weight freed and replaced at the same address is not served
//     from a stale repack; group 16 and irregular act-order fall back to the dequantize path.
// bf16 and f16 activations. Failures print the case, max abs/rel error and the first bad elements.
// Argument errors are checked without a GPU; everything else skips when no GPU is present.
// Run (GPU machine): build-*/tests/test_cuda_qgemm   or   ctest -L gpu
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "cuda/cuda_test_util.h"
#include "cuda/qgemm_check.h"
#include "backend/cpu/cpu_qmatmul.h"
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/qgemv.cuh"
#include "formats/quant_pack.h"
#include "formats/quant_repack.h"
#include "support/quant_fixtures.h"

namespace compactor {
namespace {

using test::close_to;
using test::dequant_coef;
using test::kFusedCoef;
using test::reference;
using test::Reference;


QuantizedLinear random_linear(int bits, int group, bool sym, bool act_order, int64_t n, int64_t k, uint32_t seed) {
  return test::random_quantized_linear(bits, group, sym, act_order, n, k, seed, 0.05f);
}

// Equal word vectors, or the first differing index and values (not the whole vectors).
template <typename W>
::testing::AssertionResult same_words(const std::vector<W>& got, const std::vector<W>& want, const std::string& what) {
  if (got.size() != want.size())
    return ::testing::AssertionFailure() << what << ": " << got.size() << " words, want " << want.size();
  for (size_t i = 0; i < got.size(); ++i)
    if (got[i] != want[i])
      return ::testing::AssertionFailure() << what << ": word " << i << " is 0x" << std::hex << got[i] << ", want 0x"
                                           << want[i];
  return ::testing::AssertionSuccess();
}

struct Config {
  int bits, group;
  bool sym, act_order;
};

// A random packed linear on the device, its reference weights [N, K] and its repack for each kernel
// that takes it (CUDA cores always; tensor cores for the tc layouts).
struct PreparedLinear {
  std::vector<float> w;
  std::vector<Tensor> keep;
  std::vector<std::pair<const char*, QgemvRepacked>> kernels;
};

class CudaQgemm : public test::CudaBackendTest {
 protected:
  // The kernels here are held to the GEMVs' tolerance, so this fixture's backends keep the wgmma
  // GEMM (the backend's default above 32 rows, dequantize-exact weights) off unless a test turns it
  // on (use_kernel(..., QuantGemm::kFused) or set_qgemm_wgmma) with the dequantize tolerance.
  CudaBackendOptions backend_options() const override {
    CudaBackendOptions o{GetParam()};
    o.quant_gemm = QuantGemm::kDequantize;
    return o;
  }
  void prepare(const Config& c, int64_t n, int64_t k, uint32_t seed, PreparedLinear* p) {
    auto packed = pack_linear(random_linear(c.bits, c.group, c.sym, c.act_order, n, k, seed));
    ASSERT_TRUE(packed.is_ok()) << packed.status().message();
    p->w.resize(n * k);
    dequantize_ref(packed->ref(), p->w.data());
    const LinearWeight dev_w = upload_weight(*packed, p->keep);
    for (QgemvKernel kernel : {QgemvKernel::kCudaCores, QgemvKernel::kTensorCores}) {
      if (kernel == QgemvKernel::kTensorCores && !tc_layout_supported(c.bits, false, c.group, c.act_order)) continue;
      auto repacked = qgemv_repack_cuda(dev_w, be_->stream(), kernel);
      ASSERT_TRUE(repacked.is_ok()) << repacked.status().message();
      p->kernels.emplace_back(kernel == QgemvKernel::kTensorCores ? "tensor cores" : "cuda cores",
                              std::move(repacked).value());
    }
  }
  void use_kernel(QuantKernel kernel, QuantGemm gemm = QuantGemm::kDequantize) {
    CudaBackendOptions o = backend_options();
    o.quant_kernel = kernel;
    o.quant_gemm = gemm;
    be_.reset();
    auto be = CudaBackend::create(o);
    ASSERT_TRUE(be.is_ok()) << be.status().message();
    be_ = std::move(be).value();
  }
  // out = x · dq(w)ᵀ through qgemv_cuda directly (any M).
  Status run_qgemv(View out, View x, const QgemvRepacked& r, View bias, bool accumulate) {
    const size_t bytes = qgemv_scratch_bytes(r.view(), x.rows(), x.dtype, x.data);
    Tensor scratch;
    if (bytes > 0) scratch = be_->alloc(Shape{static_cast<int64_t>(bytes)}, DType::kU8);
    const Status st = qgemv_cuda(out, x, r.view(), bias, accumulate, bytes > 0 ? scratch.data() : nullptr, be_->stream());
    be_->synchronize();  // scratch lives until the kernel is done
    return st;
  }

  void bias_and_accumulate(QgemvKernel kernel);
  void backend_paths(int64_t fused_max_rows);
  struct KernelCase {
    Config c;
    int64_t n, k;
  };
  void kernel_against_reference(const KernelCase& cs, std::initializer_list<int64_t> ms, uint32_t& seed,
                                void (*select)(bool), bool restore, const char* name_on, const char* name_off,
                                double on_coef);
};

// One weight through qgemv_cuda twice, with a process-wide kernel switch on (select(true)) and off,
// at each M: both against the reference with a bias, then the switched-on kernel accumulating onto
// its own result. on_coef: its tolerance (the other: kFusedCoef); restore: the switch's value after.
void CudaQgemm::kernel_against_reference(const KernelCase& cs, std::initializer_list<int64_t> ms, uint32_t& seed,
                                         void (*select)(bool), bool restore, const char* name_on,
                                         const char* name_off, double on_coef) {
  PreparedLinear p;
  ASSERT_NO_FATAL_FAILURE(prepare(cs.c, cs.n, cs.k, seed++, &p));
  const QgemvRepacked& tc = p.kernels.back().second;
  ASSERT_TRUE(tc.tc.defined());
  std::vector<float> bias(cs.n);
  for (int64_t i = 0; i < cs.n; ++i) bias[i] = 0.125f * static_cast<float>(i % 9) - 0.5f;
  Tensor bias_dev = upload(View{bias.data(), Shape{cs.n}, DType::kF32, Device::kCpu});
  auto run = [&](bool on, View out, View x, View b, bool accumulate) {
    select(on);
    const Status st = run_qgemv(out, x, tc, b, accumulate);
    select(restore);
    return st;
  };
  for (int64_t m : ms) {
    auto [x, xf] = random_x(m, cs.k, seed++);
    const Reference ref = reference(xf, p.w, m, cs.n, cs.k);
    const std::string what = fmt::format("int{} group {} [N {}, K {}] M {} {}", cs.c.bits, cs.c.group, cs.n, cs.k, m,
                                         dtype_name(act()));
    std::vector<float> got[2];
    Tensor outs[2];
    for (bool on : {true, false}) {
      outs[on] = be_->alloc(Shape{m, cs.n}, act());
      const Status st = run(on, outs[on], x, bias_dev, false);
      ASSERT_TRUE(st.is_ok()) << what << ": " << st.message();
      got[on] = download(outs[on]);
    }
    std::vector<double> want(m * cs.n), magnitude(ref.magnitude);
    for (int64_t i = 0; i < m * cs.n; ++i) {
      want[i] = ref.y[i] + bias[i % cs.n];
      magnitude[i] += std::fabs(bias[i % cs.n]);
    }
    EXPECT_TRUE(close_to(got[1], want, magnitude, act(), what + " " + name_on + ", bias", on_coef));
    EXPECT_TRUE(close_to(got[0], want, magnitude, act(), what + " " + name_off + ", bias"));
    const Status st = run(true, outs[1], x, View{}, true);
    ASSERT_TRUE(st.is_ok()) << what << ": " << st.message();
    for (int64_t i = 0; i < m * cs.n; ++i) {
      want[i] = ref.y[i] + got[1][i];
      magnitude[i] = ref.magnitude[i] + std::fabs(got[1][i]);
    }
    EXPECT_TRUE(close_to(download(outs[1]), want, magnitude, act(), what + " " + name_on + ", accumulate", on_coef));
  }
}

std::vector<Config> all_configs() {
  std::vector<Config> out;
  for (int bits : {8, 4, 3, 2})
    for (int group : {32, 64, 128, 0})
      for (bool sym : {false, true}) {
        out.push_back({bits, group, sym, false});
        if (bits == 4 && group != 0) out.push_back({bits, group, sym, true});
      }
  return out;
}

// (N, K): aligned, odd N with K not a multiple of 128 or of the group, N = 4097, long K.
const std::pair<int64_t, int64_t> kShapes[] = {{96, 384}, {37, 200}, {4097, 128}, {130, 1000}};

TEST_P(CudaQgemm, DeviceRepackMatchesHostReference) {
  uint32_t seed = 1;
  for (const Config& c : all_configs()) {
    for (const auto& [n, k] : {std::pair<int64_t, int64_t>{37, 200}, {64, 256}}) {
      const std::string what = fmt::format("int{} group {} sym {} act {} [{}, {}]", c.bits, c.group, c.sym,
                                           c.act_order, n, k);
      auto packed = pack_linear(random_linear(c.bits, c.group, c.sym, c.act_order, n, k, seed++));
      ASSERT_TRUE(packed.is_ok()) << packed.status().message();
      auto want = repack_linear_ref(packed->ref());
      ASSERT_TRUE(want.is_ok()) << what << ": " << want.status().message();
      std::vector<Tensor> keep;
      auto got = qgemv_repack_cuda(upload_weight(*packed, keep), be_->stream());
      ASSERT_TRUE(got.is_ok()) << what << ": " << got.status().message();
      EXPECT_EQ(got->plan.k_padded, want->plan.k_padded) << what;
      EXPECT_EQ(got->plan.permuted, want->plan.permuted) << what;
      std::vector<uint32_t> qw(want->qweight.size()), sz(want->scale_zero.size());
      ASSERT_EQ(got->qweight.bytes(), static_cast<int64_t>(qw.size() * 4)) << what;
      ASSERT_EQ(got->scale_zero.bytes(), static_cast<int64_t>(sz.size() * 4)) << what;
      be_->copy_to_host(got->qweight, qw.data());
      be_->copy_to_host(got->scale_zero, sz.data());
      EXPECT_TRUE(same_words(qw, want->qweight, what + " qweight"));
      EXPECT_TRUE(same_words(sz, want->scale_zero, what + " scale_zero"));
      if (c.act_order) {
        std::vector<int32_t> perm(want->perm.size());
        ASSERT_TRUE(got->perm.defined()) << what;
        be_->copy_to_host(got->perm, perm.data());
        EXPECT_TRUE(same_words(perm, want->perm, what + " perm"));
      }
      if (!tc_layout_supported(c.bits, false, c.group, c.act_order)) continue;
      auto got_tc = qgemv_repack_cuda(upload_weight(*packed, keep), be_->stream(), QgemvKernel::kTensorCores);
      ASSERT_TRUE(got_tc.is_ok()) << what << ": " << got_tc.status().message();
      ASSERT_TRUE(got_tc->tc.defined()) << what;
      EXPECT_FALSE(got_tc->qweight.defined()) << what;
      const std::vector<uint32_t> want_tc = repack_tc_ref(*want);
      std::vector<uint32_t> tc(want_tc.size());
      ASSERT_EQ(got_tc->tc.bytes(), static_cast<int64_t>(tc.size() * 4)) << what;
      be_->copy_to_host(got_tc->tc, tc.data());
      EXPECT_TRUE(same_words(tc, want_tc, what + " tensor-core layout"));
    }
  }
}

TEST_P(CudaQgemm, FusedMatchesReferenceEveryFormatGroupAndM) {
  uint32_t seed = 100;
  int index = 0;
  for (const Config& c : all_configs()) {
    const auto [n, k] = kShapes[index++ % std::size(kShapes)];
    PreparedLinear p;
    ASSERT_NO_FATAL_FAILURE(prepare(c, n, k, seed++, &p));
    for (int64_t m : {1, 3, 16, 64, 200}) {
      auto [x, xf] = random_x(m, k, seed++);
      const Reference ref = reference(xf, p.w, m, n, k);
      for (const auto& [kname, repacked] : p.kernels) {
        const std::string what = fmt::format("{}: int{} group {} sym {} act {} [N {}, K {}] M {} {}", kname, c.bits,
                                             c.group, c.sym, c.act_order, n, k, m, dtype_name(act()));
        Tensor out = be_->alloc(Shape{m, n}, act());
        const Status st = run_qgemv(out, x, repacked, View{}, false);
        ASSERT_TRUE(st.is_ok()) << what << ": " << st.message();
        EXPECT_TRUE(close_to(download(out), ref.y, ref.magnitude, act(), what));
      }
    }
  }
}

// Tall weights at M = 1: more row pairs than the CUDA cores' persistent grid holds warps (H100:
// 2112), so each warp runs several jobs and its prefetch crosses from one job into the next; the
// tensor cores run their 4-warp "tall" blocks here (int4 and int8 without act-order).
TEST_P(CudaQgemm, FusedPersistentGridsRunSeveralRowsPerWarp) {
  const int64_t n = 20000, k = 256;
  uint32_t seed = 700;
  for (const Config& c : {Config{8, 0, true, false}, Config{4, 128, false, false}, Config{4, 32, false, false},
                          Config{4, 64, true, true}, Config{3, 128, false, false}, Config{2, 64, false, false}}) {
    PreparedLinear p;
    ASSERT_NO_FATAL_FAILURE(prepare(c, n, k, seed++, &p));
    for (const auto& [kname, repacked] : p.kernels) {
      for (int64_t m : {int64_t{1}, int64_t{2}}) {
        auto [x, xf] = random_x(m, k, seed++);
        const Reference ref = reference(xf, p.w, m, n, k);
        Tensor out = be_->alloc(Shape{m, n}, act());
        const std::string what = fmt::format("{} int{} group {} act {} [N {}, K {}] M {} {}", kname, c.bits, c.group,
                                             c.act_order, n, k, m, dtype_name(act()));
        ASSERT_TRUE(run_qgemv(out, x, repacked, View{}, false).is_ok()) << what;
        EXPECT_TRUE(close_to(download(out), ref.y, ref.magnitude, act(), what));
      }
    }
  }
}

TEST_P(CudaQgemm, FusedBiasAndAccumulateCudaCores) { bias_and_accumulate(QgemvKernel::kCudaCores); }
TEST_P(CudaQgemm, FusedBiasAndAccumulateTensorCores) { bias_and_accumulate(QgemvKernel::kTensorCores); }

void CudaQgemm::bias_and_accumulate(QgemvKernel kernel) {
  const int64_t n = 77, k = 320, m = 5;
  auto packed = pack_linear(random_linear(4, 64, false, true, n, k, 7));
  ASSERT_TRUE(packed.is_ok());
  std::vector<float> w(n * k);
  dequantize_ref(packed->ref(), w.data());
  std::vector<Tensor> keep;
  auto repacked = qgemv_repack_cuda(upload_weight(*packed, keep), be_->stream(), kernel);
  ASSERT_TRUE(repacked.is_ok()) << repacked.status().message();
  auto [x, xf] = random_x(m, k, 8);
  const Reference ref = reference(xf, w, m, n, k);
  // Bias (f32) added once.
  std::vector<float> bias(n);
  for (int64_t i = 0; i < n; ++i) bias[i] = 0.25f * static_cast<float>(i % 5) - 0.5f;
  Tensor bias_dev = upload(View{bias.data(), Shape{n}, DType::kF32, Device::kCpu});
  Tensor out = be_->alloc(Shape{m, n}, act());
  ASSERT_TRUE(run_qgemv(out, x, *repacked, bias_dev, false).is_ok());
  std::vector<double> want(m * n), magnitude(ref.magnitude);
  for (int64_t i = 0; i < m * n; ++i) {
    want[i] = ref.y[i] + bias[i % n];
    magnitude[i] += std::fabs(bias[i % n]);
  }
  EXPECT_TRUE(close_to(download(out), want, magnitude, act(), "int4 g64 act-order with bias"));
  // Accumulate: out (holding the biased result, as stored) += x · dq(w)ᵀ.
  const std::vector<float> base = download(out);
  ASSERT_TRUE(run_qgemv(out, x, *repacked, View{}, true).is_ok());
  for (int64_t i = 0; i < m * n; ++i) {
    want[i] = base[i] + ref.y[i];
    magnitude[i] = ref.magnitude[i] + std::fabs(base[i]);
  }
  EXPECT_TRUE(close_to(download(out), want, magnitude, act(), "int4 g64 act-order accumulate"));
  EXPECT_FALSE(run_qgemv(out, x, *repacked, bias_dev, true).is_ok()) << "accumulate with a bias must be rejected";
}

TEST_P(CudaQgemm, BackendMatmulFusedAndDequantPathsAgreeWithReference) {
  ASSERT_NO_FATAL_FAILURE(use_kernel(QuantKernel::kCudaCores));
  backend_paths(kQgemvAutoMaxRows);
}

TEST_P(CudaQgemm, BackendMatmulTensorCoreKernelAgreesWithReference) {
  ASSERT_NO_FATAL_FAILURE(use_kernel(QuantKernel::kTensorCores));
  backend_paths(kQgemvTcAutoMaxRows);
}

// QuantGemm::kFused: int4 above 32 rows takes the wgmma GEMM on compute capability 9.0 (elsewhere
// the same paths as above).
TEST_P(CudaQgemm, BackendMatmulWgmmaGemmAgreesWithReference) {
  ASSERT_NO_FATAL_FAILURE(use_kernel(QuantKernel::kTensorCores, QuantGemm::kFused));
  backend_paths(kQgemvTcAutoMaxRows);
}

// Every M around the backend's switch from the fused kernel to dequantize + cuBLAS. The packed
// tensors of every config stay alive to the end: the repack cache drops the entries of freed
// weights at its next insertion, so repacked_bytes() only counts live weights.
void CudaQgemm::backend_paths(int64_t fused_max_rows) {
  uint32_t seed = 300;
  const Config configs[] = {{4, 128, false, false}, {4, 128, true, true}, {8, 0, true, false},
                            {3, 128, false, false}, {2, 64, false, false}, {2, 16, false, false}};
  std::vector<Tensor> keep;
  for (const Config& c : configs) {
    const int64_t n = 260, k = 512;
    auto packed = pack_linear(random_linear(c.bits, c.group, c.sym, c.act_order, n, k, seed++));
    ASSERT_TRUE(packed.is_ok());
    std::vector<float> w(n * k);
    dequantize_ref(packed->ref(), w.data());
    const LinearWeight dev_w = upload_weight(*packed, keep);
    const int64_t repacked_before = be_->repacked_bytes();
    for (int64_t m : {int64_t{1}, int64_t{4}, int64_t{16}, fused_max_rows, fused_max_rows + 1}) {
      const std::string what = fmt::format("backend int{} group {} sym {} act {} M {} {}", c.bits, c.group, c.sym,
                                           c.act_order, m, dtype_name(act()));
      auto [x, xf] = random_x(m, k, seed++);
      const Reference ref = reference(xf, w, m, n, k);
      Tensor out = be_->alloc(Shape{m, n}, act());
      be_->matmul(out, x, dev_w);
      EXPECT_TRUE(close_to(download(out), ref.y, ref.magnitude, act(), what, dequant_coef(act())));
      // matmul_add: x += a · wᵀ (the fused kernel's accumulate at small M).
      const std::vector<float> base = download(out);
      Tensor scratch = be_->alloc(Shape{m, n}, act());
      be_->matmul_add(out, x, dev_w, scratch);
      std::vector<double> want(m * n), magnitude(m * n);
      for (int64_t i = 0; i < m * n; ++i) {
        want[i] = base[i] + ref.y[i];
        magnitude[i] = ref.magnitude[i] + std::fabs(base[i]);
      }
      EXPECT_TRUE(close_to(download(out), want, magnitude, act(), what + " matmul_add", dequant_coef(act())));
    }
    // Group 16 cannot be repacked (dequantize path); every other config must have taken the fused one.
    const int64_t added = be_->repacked_bytes() - repacked_before;
    if (c.group == 16)
      EXPECT_EQ(added, 0) << "int" << c.bits << " group 16 was repacked";
    else
      EXPECT_GT(added, 0) << "int" << c.bits << " group " << c.group << " act " << c.act_order
                          << ": no repack was made, so the fused path never ran";
  }
}

// q/k/v- and gate/up-like groups in one launch (qgemv_group_cuda, through CudaBackend::matmul_group):
// weights of different N (not multiples of 16) and one K, a bias on one of them, M around the
// kernel's row tiles; every output against its own reference. A group with an act-order member
// is not groupable and runs weight by weight, with the same results.
TEST_P(CudaQgemm, GroupedLaunchMatchesEachWeight) {
  ASSERT_NO_FATAL_FAILURE(use_kernel(QuantKernel::kTensorCores, QuantGemm::kFused));
  uint32_t seed = 800;
  // N not multiples of 16 (the per-lane kernel at M <= 8), and multiples of 16 (the streaming one).
  const int64_t shapes[2][3] = {{96, 37, 130}, {1024, 512, 512}};
  for (const auto& ns : shapes) {
    for (int group : {128, 32})
      for (bool act_order_member : {false, true}) {
        const int64_t k = 384;
        std::vector<Tensor> keep;
        std::vector<LinearWeight> ws;
        std::vector<std::vector<float>> dq;
        Tensor bias_host = Tensor::empty(Shape{ns[1]}, DType::kF32);
        for (int64_t i = 0; i < ns[1]; ++i) bias_host.as<float>()[i] = 0.01f * static_cast<float>(i % 7);
        for (int i = 0; i < 3; ++i) {
          auto packed = pack_linear(random_linear(4, group, i == 2, act_order_member && i == 2, ns[i], k, seed++));
          ASSERT_TRUE(packed.is_ok()) << packed.status().message();
          dq.emplace_back(ns[i] * k);
          dequantize_ref(packed->ref(), dq.back().data());
          ws.push_back(upload_weight(*packed, keep, i == 1 ? bias_host.view() : View{}));
        }
        const LinearWeight* wp[] = {&ws[0], &ws[1], &ws[2]};
        for (int64_t m : {1, 3, 16, 32, 200}) {  // 200: the wgmma GEMM (QuantGemm::kFused, compute capability 9.0)
          auto [x, xf] = random_x(m, k, seed++);
          std::vector<Tensor> outs;
          View ov[3];
          for (int i = 0; i < 3; ++i) {
            outs.push_back(be_->alloc(Shape{m, ns[i]}, act()));
            ov[i] = outs.back().view();
          }
          be_->matmul_group(ov, x, wp, 3);
          for (int i = 0; i < 3; ++i) {
            Reference ref = reference(xf, dq[i], m, ns[i], k);
            if (i == 1)
              for (int64_t t = 0; t < m; ++t)
                for (int64_t j = 0; j < ns[i]; ++j) ref.y[t * ns[i] + j] += bias_host.as<float>()[j];
            const std::string what = fmt::format("group g{} act-order member {} weight {} [N {}] M {} {}", group,
                                                 act_order_member, i, ns[i], m, dtype_name(act()));
            EXPECT_TRUE(close_to(download(outs[i]), ref.y, ref.magnitude, act(), what, dequant_coef(act())));
          }
        }
      }
  }
}

// The streaming kernel (qgemv_stream.cu) against the reference and against the per-lane kernel
// (streaming off) on shapes that exercise its ring: more row tiles than SMs (each block walks
// several tiles, so the two scale/zero slots and the ring's stages are reused), K of 44 chunks
// (three stages a tile, the last one partial), N not a multiple of 16 where the partial scale
// block is whole 16-byte units, M up to 16 (one and two n8 tiles), bias and accumulate, and a q/k/v-like grouped launch.
TEST_P(CudaQgemm, StreamingKernelWalksManyTilesAndMatchesPerLaneKernel) {
  // 8232 = 514 tiles + 8 rows; int4 g128 at K 2816: Gp = 22 words, 8 rows x 88 B = 704 B.
  const KernelCase cases[] = {{{4, 128, false, false}, 8232, 2816}, {{4, 32, true, false}, 8192, 2816},
                              {{4, 0, false, false}, 4096, 4096},   {{8, 0, true, false}, 8240, 2816},
                              {{8, 128, false, false}, 2064, 2816}};
  uint32_t seed = 900;
  for (const KernelCase& cs : cases)
    ASSERT_NO_FATAL_FAILURE(kernel_against_reference(cs, {1, 5, 8, 12, 16}, seed, set_qgemv_streaming, true,
                                                     "streaming", "per-lane", kFusedCoef));
}

// The wgmma GEMM (qgemm_wgmma.cu, compute capability 9.0; int4 above 32 rows) against the
// reference and against the per-lane kernel (wgmma off): N not a multiple of 16 or of the block's
// 128 rows, K of 65 chunks (the 5-stage ring wraps many times), K = 1000 (a partial 64-position
// chunk of zero-padded x), M not a multiple of the block's 256 tokens, group sizes 32 (two groups per chunk),
// 128 and per-channel, bias and accumulate. Skips the wgmma half where the device has no sm_90a.
TEST_P(CudaQgemm, WgmmaGemmMatchesReferenceAndPerLaneKernel) {
  cudaDeviceProp prop{};
  ASSERT_EQ(cudaGetDeviceProperties(&prop, 0), cudaSuccess);
  if (prop.major != 9 || prop.minor != 0) GTEST_SKIP() << "the wgmma GEMM needs compute capability 9.0";
  const KernelCase cases[] = {{{4, 128, false, false}, 1000, 4160}, {{4, 32, true, false}, 1040, 4096},
                              {{4, 0, false, false}, 264, 1000}};
  uint32_t seed = 1000;
  // Off afterwards, as this fixture's backends are made (use_kernel: QuantGemm::kDequantize).
  for (const KernelCase& cs : cases)
    ASSERT_NO_FATAL_FAILURE(kernel_against_reference(cs, {33, 128, 300}, seed, set_qgemm_wgmma, false, "wgmma",
                                                     "per-lane", dequant_coef(act())));
}

// The GEMM on with K split over clusters of kSplits blocks (off: unsplit, the cost model's choice).
template <int kSplits>
void wgmma_with_splits(bool on) {
  set_qgemm_wgmma(on);
  set_qgemm_wgmma_plan(0, on ? kSplits : 0);
}

// Split K (qgemm_wgmma.cu: each block of a cluster multiplies its share of the chunks, the partial
// tiles summed through distributed shared memory): forced to 1..4 blocks per tile, K of 65 chunks
// (shares of 16 and 17), M with a partial token tile, N past the last row tile, bias and
// accumulate; and the same bits on every run (the sum's order is fixed by cluster rank).
TEST_P(CudaQgemm, WgmmaGemmSplitKMatchesReferenceAndIsDeterministic) {
  cudaDeviceProp prop{};
  ASSERT_EQ(cudaGetDeviceProperties(&prop, 0), cudaSuccess);
  if (prop.major != 9 || prop.minor != 0) GTEST_SKIP() << "the wgmma GEMM needs compute capability 9.0";
  const KernelCase cs{{4, 128, false, false}, 1000, 4160};
  void (*const selects[])(bool) = {wgmma_with_splits<1>, wgmma_with_splits<2>, wgmma_with_splits<3>,
                                   wgmma_with_splits<4>};
  uint32_t seed = 2000;
  for (int i = 0; i < 4; ++i) {
    SCOPED_TRACE(fmt::format("{} blocks per tile", i + 1));
    ASSERT_NO_FATAL_FAILURE(kernel_against_reference(cs, {40, 300}, seed, selects[i], false, "wgmma split",
                                                     "per-lane", dequant_coef(act())));
  }
  PreparedLinear p;
  ASSERT_NO_FATAL_FAILURE(prepare(cs.c, cs.n, cs.k, seed++, &p));
  auto [x, xf] = random_x(300, cs.k, seed++);
  std::vector<float> runs[2];
  for (std::vector<float>& got : runs) {
    Tensor out = be_->alloc(Shape{300, cs.n}, act());
    wgmma_with_splits<3>(true);
    const Status st = run_qgemv(out, x, p.kernels.back().second, View{}, false);
    wgmma_with_splits<3>(false);
    ASSERT_TRUE(st.is_ok()) << st.message();
    got = download(out);
  }
  EXPECT_TRUE(runs[0] == runs[1]) << "split K gave different outputs on two runs";
}

TEST_P(CudaQgemm, ReplacedWeightIsNotServedFromAStaleRepack) {
  const int64_t n = 128, k = 256;
  for (uint32_t seed = 500; seed < 504; ++seed) {  // same shapes: the allocator likely reuses addresses
    auto packed = pack_linear(random_linear(4, 128, false, false, n, k, seed));
    ASSERT_TRUE(packed.is_ok());
    std::vector<float> w(n * k);
    dequantize_ref(packed->ref(), w.data());
    std::vector<Tensor> keep;
    const LinearWeight dev_w = upload_weight(*packed, keep);
    auto [x, xf] = random_x(1, k, seed);
    const Reference ref = reference(xf, w, 1, n, k);
    Tensor out = be_->alloc(Shape{1, n}, act());
    be_->matmul(out, x, dev_w);
    EXPECT_TRUE(close_to(download(out), ref.y, ref.magnitude, act(), fmt::format("weight {}", seed)));
  }
  be_->forget_repacked_weights();
  EXPECT_EQ(be_->repacked_bytes(), 0);
}

TEST_P(CudaQgemm, UnrepackableWeightsFallBackToDequantize) {
  // Group 16 (w2g16) and an act-order g_idx whose groups are not of group_size members.
  QuantizedLinear g16 = random_linear(2, 16, false, false, 40, 128, 9);
  QuantizedLinear irregular = random_linear(4, 32, false, false, 40, 128, 10);
  irregular.g_idx.resize(128);
  for (int64_t i = 0; i < 128; ++i) irregular.g_idx[i] = static_cast<int32_t>((i * 7) % 3);  // 3 groups of ~43, not 32
  for (const QuantizedLinear* q : {&g16, &irregular}) {
    auto packed = pack_linear(*q);
    ASSERT_TRUE(packed.is_ok()) << packed.status().message();
    std::vector<Tensor> keep;
    const LinearWeight dev_w = upload_weight(*packed, keep);
    auto repacked = qgemv_repack_cuda(dev_w, be_->stream());
    ASSERT_FALSE(repacked.is_ok());
    EXPECT_EQ(repacked.status().code(), StatusCode::kUnsupported) << repacked.status().message();
    std::vector<float> w(40 * 128);
    dequantize_ref(packed->ref(), w.data());
    auto [x, xf] = random_x(2, 128, 11);
    const Reference ref = reference(xf, w, 2, 40, 128);
    Tensor out = be_->alloc(Shape{2, 40}, act());
    be_->matmul(out, x, dev_w);
    EXPECT_TRUE(close_to(download(out), ref.y, ref.magnitude, act(), "fallback", dequant_coef(act())));
  }
}

INSTANTIATE_TEST_SUITE_P(Act, CudaQgemm, ::testing::Values(DType::kBF16, DType::kF16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

// Argument checks run before any launch, so they need no GPU.
TEST(CudaQgemmArgs, HostViewsAndBadShapesAreRejected) {
  auto plan = plan_repack(4, 128, 8, 256, nullptr, nullptr);
  ASSERT_TRUE(plan.is_ok());
  QgemvWeight w;
  w.plan = *plan;
  std::vector<uint32_t> fake(8 * 64);
  w.qweight = fake.data();
  w.scale_zero = fake.data();
  std::vector<uint16_t> xs(2 * 256), os(2 * 8);
  const View x_host{xs.data(), Shape{2, 256}, DType::kBF16, Device::kCpu};
  const View out_dev{os.data(), Shape{2, 8}, DType::kBF16, Device::kCuda};
  Status st = qgemv_cuda(out_dev, x_host, w, View{}, false, nullptr, nullptr);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.message();
  const View x_dev{xs.data(), Shape{2, 200}, DType::kBF16, Device::kCuda};  // K mismatch
  st = qgemv_cuda(out_dev, x_dev, w, View{}, false, nullptr, nullptr);
  EXPECT_NE(st.message().find("x has shape"), std::string::npos) << st.message();
  const View x_f32{xs.data(), Shape{2, 128}, DType::kF32, Device::kCuda};
  st = qgemv_cuda(out_dev, x_f32, w, View{}, false, nullptr, nullptr);
  EXPECT_EQ(st.code(), StatusCode::kUnsupported) << st.message();
  LinearWeight dense;
  auto r = qgemv_repack_cuda(dense, nullptr);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("not quantized"), std::string::npos) << r.status().message();
}

}  // namespace
}  // namespace compactor
