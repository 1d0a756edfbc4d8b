// GPU weight quantization (compress/gptq_cuda.h, hessian.h device statistics) against the CPU
// versions on the same inputs:
//  - GPTQ on a random layer with the Hessian of random correlated X (a few dead inputs): every
//    option the CPU solver has (groups below/at/above the block size, per-channel, act-order,
//    static groups, sym/asym, 2..8 bits); codes agree for >= 98% of weights, the first swept
//    column and the first group's scales/zeros (no error feedback yet) exactly, g_idx, dead inputs
//    and damping exactly, and the GPU's output error ‖(W − Ŵ)X‖²/‖WX‖² is within 2% of the CPU's.
//    Why 98% and not 100%: GPTQ's codes are chaotic under float-level changes of H⁻¹ (a flipped
//    rounding changes the error fed to the rest of the row). Measured on the CPU alone with this
//    layer: perturbing H by 1e-7 / 1e-6 / 1e-5 relative keeps 99.87-100% / 99.69-99.98% /
//    98.8-99.7% of codes, while the output error moves by < 0.2%. cuSOLVER vs LAPACK and cuBLAS vs
//    OpenBLAS summation order are perturbations of that kind;
//  - RTN: codes, scales and zeros identical; the device error measurement vs the host's;
//  - XᵀX and mean|x| accumulated on the GPU from bf16 activations vs the host from the same values;
//  - quantize_model on a tiny synthetic model on the GPU vs the CPU (GPTQ and RTN): every linear
//    reported, GPTQ ≤ RTN per linear, errors close to the CPU's (bf16 vs f32 activations).
// Every check prints the measured numbers. Skips (GTEST_SKIP) when no GPU is present.
// Run (GPU machine): build-*/tests/test_cuda_gptq   or   ctest -L gpu -R gptq
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "cuda/cuda_test_util.h"
#include "backend/cuda/cuda_backend.h"
#include "compress/calibration.h"
#include "compress/gptq.h"
#include "compress/gptq_cuda.h"
#include "compress/hessian.h"
#include "compress/obs_solver.h"
#include "compress/ptq.h"
#include "compress/quant_grid.h"
#include "core/dtype.h"
#include "model/synthetic.h"

namespace compactor {
namespace {

using test::gpu_present;

// Rounds f32 values to bf16 and back (what a bf16 activation or weight holds).
std::vector<float> bf16_rounded(std::vector<float> v) {
  for (float& x : v) x = bf16_to_f32(f32_to_bf16(x));
  return v;
}

// X: [T, K] correlated (Z·A plus a few heavy channels), `dead` input columns all zero.
std::vector<float> random_inputs(int64_t t, int64_t k, const std::vector<int64_t>& dead, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  const int64_t r = 32;  // latent factors
  std::vector<float> a(r * k), x(t * k);
  for (float& v : a) v = nd(rng);
  for (int64_t i = 0; i < t; ++i) {
    std::vector<float> z(r);
    for (float& v : z) v = nd(rng);
    for (int64_t j = 0; j < k; ++j) {
      float s = 0.3f * nd(rng);
      for (int64_t q = 0; q < r; ++q) s += z[q] * a[q * k + j] * 0.2f;
      x[i * k + j] = j % 37 == 0 ? 8.f * s : s;
    }
  }
  for (int64_t d : dead)
    for (int64_t i = 0; i < t; ++i) x[i * k + d] = 0.f;
  return x;
}

std::vector<float> random_weights(int64_t n, int64_t k, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 0.05f);
  std::vector<float> w(n * k);
  for (float& v : w) v = nd(rng);
  return w;
}

class CudaGptq : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!gpu_present()) GTEST_SKIP() << "no CUDA device";
    auto be = CudaBackend::create({});
    ASSERT_TRUE(be.is_ok()) << be.status().message();
    backend_ = std::move(be).value();
    auto ctx = make_cuda_compress_context(*backend_);
    ASSERT_TRUE(ctx.is_ok()) << ctx.status().message();
    ctx_ = std::move(ctx).value();
  }

  Tensor upload_f32(const std::vector<float>& v, Shape shape) {
    Tensor t = backend_->alloc(shape, DType::kF32);
    backend_->copy_from_host(v.data(), t);
    return t;
  }
  std::vector<float> download_f32(const Tensor& t) {
    std::vector<float> v(t.numel());
    backend_->copy_to_host(t.view(), v.data());
    return v;
  }

  std::unique_ptr<CudaBackend> backend_;
  std::shared_ptr<CudaCompressContext> ctx_;
};

struct GptqCase {
  int bits, group;
  bool sym, act_order, static_groups;
  int block = 128;
};

std::string case_name(const GptqCase& c) {
  return fmt::format("w{}g{}{}{}{} block {}", c.bits, c.group, c.sym ? " sym" : "", c.act_order ? " act-order" : "",
                     c.static_groups ? " static" : "", c.block);
}

TEST_F(CudaGptq, MatchesCpuOnEveryOption) {
  const int64_t n = 192, k = 512, t = 1024;
  const std::vector<int64_t> dead = {5, 300};
  const std::vector<float> x = random_inputs(t, k, dead, 1);
  const std::vector<float> w = random_weights(n, k, 2);
  InputStats st(k);
  st.add(x.data(), t);
  const std::vector<float> gram = st.gram();
  Tensor w_dev = upload_f32(w, Shape{n, k}), gram_dev = upload_f32(gram, Shape{k, k});
  Tensor w_hat = backend_->alloc(Shape{n, k}, DType::kF32);
  const std::vector<GptqCase> cases = {
      {4, 128, false, false, false},     {4, 128, false, true, false},     {4, 128, false, true, true},
      {3, 64, true, false, false},       {4, 256, false, false, false},    {4, 256, false, true, false, 64},
      {4, 0, false, false, false},       {2, 32, false, true, false},      {8, 128, true, false, false},
      {4, 128, true, true, true, 32},
  };
  for (const GptqCase& c : cases) {
    SCOPED_TRACE(case_name(c));
    const GptqOptions opts{QuantSpec{c.bits, c.group, c.sym}, 0.01f, c.block, c.act_order, c.static_groups};
    auto cpu = gptq_quantize(w.data(), n, k, st.hessian(), opts, "cpu");
    ASSERT_TRUE(cpu.is_ok()) << cpu.status().message();
    GpuSolveTimes times;
    auto gpu = gptq_quantize_cuda(*ctx_, w_dev, gram_dev, st.tokens(), opts, w_hat, "gpu", &times);
    ASSERT_TRUE(gpu.is_ok()) << gpu.status().message();
    const QuantizedLinear& qc = cpu->q;
    const QuantizedLinear& qg = gpu->q;
    int64_t same = 0;
    for (size_t i = 0; i < qc.codes.size(); ++i) same += qc.codes[i] == qg.codes[i];
    const double agreement = static_cast<double>(same) / static_cast<double>(qc.codes.size());
    const std::vector<float> dc = dequantize_linear(qc), dg = dequantize_linear(qg);
    const double err_cpu = relative_output_error(w.data(), dc.data(), n, k, gram.data());
    const double err_gpu = relative_output_error(w.data(), dg.data(), n, k, gram.data());
    const QuantizedLinear rtn = rtn_quantize(w.data(), n, k, opts.spec);
    const double err_rtn = relative_output_error(w.data(), dequantize_linear(rtn).data(), n, k, gram.data());
    std::printf("[gptq %-32s] codes agree %.5f  err cpu %.5e gpu %.5e (gpu/cpu %.4f, rtn %.5e)  dead %lld/%lld  "
                "damp retries %d/%d  factor %.1f ms sweep %.1f ms\n",
                case_name(c).c_str(), agreement, err_cpu, err_gpu, err_gpu / err_cpu, err_rtn,
                static_cast<long long>(cpu->stats.dead_columns), static_cast<long long>(gpu->stats.dead_columns),
                cpu->stats.damp_retries, gpu->stats.damp_retries, 1e3 * times.factor_seconds,
                1e3 * times.sweep_seconds);
    EXPECT_GE(agreement, 0.98);
    EXPECT_LE(err_gpu, err_cpu * 1.02 + 1e-9);
    // Before any error feedback the two must agree exactly: the first swept column's codes and the
    // first group's grid (static groups: every group's).
    const int32_t first = obs_column_order(st.hessian(), k, c.act_order)[0];
    int64_t first_mismatch = 0, grid_mismatch = 0;
    const int64_t groups = qc.groups();
    for (int64_t r = 0; r < n; ++r) {
      first_mismatch += qc.codes[r * k + first] != qg.codes[r * k + first];
      for (int64_t g = 0; g < (c.static_groups ? groups : 1); ++g) {
        const int64_t gg = c.static_groups ? g : (qc.g_idx.empty() ? qc.group_of(first) : 0);
        grid_mismatch += qc.scales[r * groups + gg] != qg.scales[r * groups + gg] ||
                         qc.zeros[r * groups + gg] != qg.zeros[r * groups + gg];
      }
    }
    EXPECT_EQ(first_mismatch, 0) << "codes of the first swept column (input " << first << ") differ in some rows";
    EXPECT_EQ(grid_mismatch, 0) << "scale/zero of the first group differ in some rows";
    EXPECT_LT(err_gpu, err_rtn);
    EXPECT_EQ(qc.g_idx, qg.g_idx);
    EXPECT_EQ(cpu->stats.dead_columns, gpu->stats.dead_columns);
    EXPECT_EQ(gpu->stats.dead_columns, static_cast<int64_t>(dead.size()));
    EXPECT_FLOAT_EQ(cpu->stats.damp, gpu->stats.damp);
    // The device's Ŵ is exactly the dequantized codes it returned.
    const std::vector<float> w_hat_host = download_f32(w_hat);
    int64_t mismatched = 0;
    for (size_t i = 0; i < dg.size(); ++i) mismatched += w_hat_host[i] != dg[i];
    EXPECT_EQ(mismatched, 0) << "w_hat differs from dequantize(codes) at " << mismatched << " weights";
  }
}

TEST_F(CudaGptq, RtnAndErrorMeasurementMatchCpu) {
  const int64_t n = 96, k = 384, t = 512;
  const std::vector<float> x = random_inputs(t, k, {}, 3);
  const std::vector<float> w = random_weights(n, k, 4);
  InputStats st(k);
  st.add(x.data(), t);
  const std::vector<float> gram = st.gram();
  Tensor w_dev = upload_f32(w, Shape{n, k}), gram_dev = upload_f32(gram, Shape{k, k});
  Tensor w_hat = backend_->alloc(Shape{n, k}, DType::kF32);
  for (const QuantSpec spec : {QuantSpec{4, 128, false}, QuantSpec{3, 32, true}, QuantSpec{8, 0, false},
                               QuantSpec{2, 64, false}}) {
    SCOPED_TRACE(fmt::format("w{}g{}{}", spec.bits, spec.group_size, spec.symmetric ? " sym" : ""));
    const QuantizedLinear cpu = rtn_quantize(w.data(), n, k, spec);
    auto gpu = rtn_quantize_cuda(*ctx_, w_dev, spec, w_hat, "gpu");
    ASSERT_TRUE(gpu.is_ok()) << gpu.status().message();
    EXPECT_EQ(cpu.codes, gpu->codes);
    EXPECT_EQ(cpu.scales, gpu->scales);
    EXPECT_EQ(cpu.zeros, gpu->zeros);
    const std::vector<float> deq = dequantize_linear(cpu);
    EXPECT_EQ(download_f32(w_hat), deq);
    const double want = relative_output_error(w.data(), deq.data(), n, k, gram.data());
    auto got = relative_output_error_cuda(*ctx_, w_dev, w_hat, gram_dev);
    ASSERT_TRUE(got.is_ok()) << got.status().message();
    std::printf("[rtn w%dg%d] error cpu %.6e gpu %.6e\n", spec.bits, spec.group_size, want, *got);
    EXPECT_NEAR(*got, want, 1e-4 * want);
  }
}

TEST_F(CudaGptq, StatisticsOnTheGpuMatchTheHost) {
  const int64_t k = 320, t = 700;
  const std::vector<float> x = bf16_rounded(random_inputs(t, k, {7}, 5));
  std::vector<uint16_t> xb(x.size());
  for (size_t i = 0; i < x.size(); ++i) xb[i] = f32_to_bf16(x[i]);
  Tensor xd = backend_->alloc(Shape{t, k}, DType::kBF16);
  backend_->copy_from_host(xb.data(), xd);
  auto dev = InputStats::on_device(ctx_, k);
  ASSERT_TRUE(dev.is_ok()) << dev.status().message();
  InputStats host(k);
  // Two uneven chunks: accumulation across calls.
  ASSERT_TRUE(dev->add(*backend_, View(xd).row_slice(0, 300)).is_ok());
  ASSERT_TRUE(dev->add(*backend_, View(xd).row_slice(300, t - 300)).is_ok());
  host.add(x.data(), t);
  EXPECT_TRUE(dev->on_device());
  EXPECT_EQ(dev->tokens(), t);
  const std::vector<float>& gd = dev->gram();
  const std::vector<float>& gh = host.gram();
  double diff = 0, norm = 0;
  for (size_t i = 0; i < gh.size(); ++i) {
    diff = std::max(diff, std::fabs(double(gd[i]) - gh[i]));
    norm = std::max(norm, std::fabs(double(gh[i])));
  }
  const std::vector<float> md = dev->mean_abs(), mh = host.mean_abs();
  double mdiff = 0;
  for (int64_t i = 0; i < k; ++i) mdiff = std::max(mdiff, std::fabs(double(md[i]) - mh[i]) / std::max(1e-12, double(mh[i])));
  std::printf("[stats] max |G_gpu - G_cpu| / max |G| = %.3e, mean|x| max rel diff %.3e, dead diag %g\n", diff / norm,
              mdiff, gd[7 * k + 7]);
  EXPECT_LT(diff / norm, 1e-5);
  EXPECT_LT(mdiff, 1e-6);
  EXPECT_EQ(gd[7 * k + 7], 0.f);
}

// quantize_model on the tiny synthetic model, same weights and calibration ids on CPU and GPU.
struct PtqRun {
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Model> model;
  PtqResult result;
};

PtqRun run_ptq(std::unique_ptr<Backend> backend, PtqMethod method) {
  PtqRun run;
  run.backend = std::move(backend);
  auto cfg = synthetic_config("tiny");
  COMPACTOR_ASSERT(cfg.is_ok(), "{}", cfg.status().message());
  auto model = Model::allocate(*cfg, *run.backend);
  COMPACTOR_ASSERT(model.is_ok(), "{}", model.status().message());
  run.model = std::move(model).value();
  Backend& be = *run.backend;
  fill_synthetic_weights(*run.model, 7, [&](View v, uint64_t s, float mean, float sd) { fill_normal_host(be, v, s, mean, sd); });
  const int samples = 8, seqlen = 128;
  std::mt19937 rng(11);
  std::vector<int32_t> ids(samples * seqlen);
  for (int32_t& id : ids) id = static_cast<int32_t>(rng() % cfg->vocab_size);
  const CalibrationSet calib = calibration_from_ids(ids, samples, seqlen);
  PtqOptions o;
  o.method = method;
  o.spec = QuantSpec{4, 16, false};
  o.quiet = true;
  o.batch_tokens = 256;
  auto r = quantize_model(*run.model, &calib, o);
  COMPACTOR_ASSERT(r.is_ok(), "quantize_model on {}: {}", be.name(), r.status().message());
  run.result = std::move(r).value();
  return run;
}

TEST_F(CudaGptq, QuantizeModelOnTheGpuMatchesCpu) {
  for (PtqMethod method : {PtqMethod::kGptq, PtqMethod::kRtn}) {
    SCOPED_TRACE(ptq_method_name(method));
    auto cpu_be = make_backend(BackendKind::kCpu);
    ASSERT_TRUE(cpu_be.is_ok());
    auto gpu_be = CudaBackend::create({});
    ASSERT_TRUE(gpu_be.is_ok()) << gpu_be.status().message();
    PtqRun cpu = run_ptq(std::move(cpu_be).value(), method);
    PtqRun gpu = run_ptq(std::move(gpu_be).value(), method);
    EXPECT_FALSE(cpu.result.on_gpu);
    EXPECT_TRUE(gpu.result.on_gpu);
    ASSERT_EQ(cpu.result.linears.size(), gpu.result.linears.size());
    ASSERT_EQ(gpu.result.linears.size(), 14u);
    for (size_t i = 0; i < cpu.result.linears.size(); ++i) {
      const LinearReport& c = cpu.result.linears[i];
      const LinearReport& g = gpu.result.linears[i];
      std::printf("[%s %-34s] err cpu %.4e gpu %.4e (ratio %.3f)  rtn cpu %.4e gpu %.4e\n",
                  ptq_method_name(method), g.module.c_str(), c.rel_error, g.rel_error, g.rel_error / c.rel_error,
                  c.rtn_rel_error, g.rtn_rel_error);
      EXPECT_EQ(c.module, g.module);
      EXPECT_GT(g.rel_error, 0);
      EXPECT_LE(g.rel_error, g.rtn_rel_error * 1.0001);
      // bf16 activations and weights on the GPU, f32 on the CPU: close, not equal.
      EXPECT_NEAR(g.rel_error / c.rel_error, 1.0, 0.15);
      EXPECT_NEAR(g.rtn_rel_error / c.rtn_rel_error, 1.0, 0.15);
      ASSERT_TRUE(gpu.result.quantized.count(g.module));
      EXPECT_EQ(gpu.result.quantized.at(g.module).codes.size(), static_cast<size_t>(g.out_features * g.in_features));
    }
    const auto& p = gpu.result.phases;
    std::printf("[%s phases] forward %.3f s stats %.3f s factor %.3f s sweep %.3f s measure %.3f s write %.3f s\n",
                ptq_method_name(method), p.forward, p.stats, p.factor, p.sweep, p.measure, p.write_back);
  }
}

}  // namespace
}  // namespace compactor
