// CUDA backend ops against the scalar CPU references (backend/cpu/ops_ref.h), for bf16 and f16
// activations. Inputs are random (fixed seeds) and rounded to the activation dtype first, so the
// reference sees exactly the bits the GPU sees; shapes include odd sizes, GQA ratios 1/2/3/4,
// head dims 8..256, batches with different n_past, decode (T = 1) and prefill, and attention with
// the key split forced on. Outputs are poisoned with NaN before each op and every element must
// be written. Without a GPU the op tests skip (GTEST_SKIP) and only the no-GPU error is checked.
// Run (GPU machine): build-cuda/tests/test_cuda_ops   or   ctest -L gpu
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/ops_ref.h"
#include "backend/cuda/attention.cuh"
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/matmul.cuh"
#include "model/sampler.h"
#include "model/synthetic.h"
#include "support/compare.h"

namespace compactor {
namespace {

// Tolerances on ‖gpu − ref‖ / ‖ref‖. Each op rounds its f32 result to the activation dtype once
// (bf16: 8 significant bits, rms error ~1e-3; f16: 11 bits, ~1.5e-4); the references run in
// double on the same rounded inputs, so the bounds leave ~5x headroom over one rounding.
double act_tol(DType d) { return d == DType::kBF16 ? 1e-2 : 2e-3; }
constexpr double kNllTol = 1e-4;  // f32 log-sum-exp vs double, outputs stay f32

bool gpu_present(std::string* why) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    *why = cudaGetErrorString(err);
    return false;
  }
  *why = "0 devices";
  return count > 0;
}

std::vector<float> random_values(int64_t n, uint32_t seed, float scale) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// A host tensor of `dtype` holding N(0, scale²) values rounded to that dtype.
Tensor random_host(Shape shape, DType dtype, uint32_t seed, float scale = 1.f) {
  const std::vector<float> v = random_values(shape.numel(), seed, scale);
  Tensor t = Tensor::empty(shape, dtype);
  convert_from_f32(v.data(), t.numel(), dtype, t.data());
  return t;
}

std::vector<float> values_of(View host) {
  std::vector<float> out(host.numel());
  convert_to_f32(host.data, host.dtype, host.numel(), out.data());
  return out;
}

int64_t count_non_finite(const std::vector<float>& v) {
  int64_t n = 0;
  for (float x : v) n += std::isfinite(x) ? 0 : 1;
  return n;
}

struct AttentionCase {
  int batch, tokens, heads, kv_heads, head_dim;
  std::vector<int32_t> past;
  float q_scale;  // larger scores stress the online-softmax rescaling
};

const std::vector<AttentionCase>& attention_cases();

class CudaOps : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override { make_backend_with({}); }

  void make_backend_with(CudaBackendOptions options) {
    std::string why;
    if (!gpu_present(&why)) GTEST_SKIP() << "no CUDA GPU on this machine (" << why << "): GPU op tests skipped";
    options.activation_dtype = GetParam();
    be_.reset();
    auto created = CudaBackend::create(options);
    ASSERT_TRUE(created.is_ok()) << created.status().message();
    be_ = std::move(created).value();
  }

  DType act() const { return GetParam(); }
  double tol() const { return act_tol(GetParam()); }

  Tensor upload(const Tensor& host) {
    Tensor dev = be_->alloc(host.shape(), host.dtype());
    be_->copy_from_host(host.data(), dev);
    return dev;
  }
  Tensor download(View dev) {
    Tensor host = Tensor::empty(dev.shape, dev.dtype);
    be_->copy_to_host(dev, host.data());
    return host;
  }
  Tensor upload_i32(const std::vector<int32_t>& v) {
    Tensor dev = be_->alloc(Shape{static_cast<int64_t>(v.size())}, DType::kI32);
    be_->copy_from_host(v.data(), dev);
    return dev;
  }
  // All-ones bits: NaN in f32, f16 and bf16.
  void poison(View dev) { ASSERT_EQ(cudaMemsetAsync(dev.data, 0xFF, dev.bytes(), be_->stream()), cudaSuccess); }
  Tensor poisoned(Shape shape, DType dtype) {
    Tensor t = be_->alloc(shape, dtype);
    poison(t);
    return t;
  }

  // Every element written (finite) and close to the reference.
  void expect_close(View dev, View ref_host, double tolerance, const std::string& what) {
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess) << what;
    const std::vector<float> got = values_of(download(dev)), want = values_of(ref_host);
    ASSERT_EQ(got.size(), want.size()) << what;
    ASSERT_EQ(count_non_finite(want), 0) << what << ": reference is not finite";
    EXPECT_EQ(count_non_finite(got), 0) << what << ": elements left unwritten (NaN poison) or not finite";
    const double err = test::rel_l2_error(got, want);
    EXPECT_LE(err, tolerance) << what << " (" << dtype_name(act()) << ")";
    std::printf("  %-48s rel err %.3e (tol %.0e)\n", what.c_str(), err, tolerance);
  }

  // Fills the caches with random rows 0 .. past(b)+T-1 and NaN beyond (never to be read), runs
  // the reference and the GPU op, and compares.
  // Fills the caches with random rows 0 .. past(b)+T-1 and NaN beyond (never to be read), runs
  // the reference and the GPU op, and compares.
  void run_attention_case(const AttentionCase& c, uint32_t seed, const std::string& tag) {
    const DType act = GetParam();
    const int64_t rows = int64_t{c.batch} * c.tokens, qcols = int64_t{c.heads} * c.head_dim;
    const int64_t kvcols = int64_t{c.kv_heads} * c.head_dim;
    int s_max = 0;
    for (int b = 0; b < c.batch; ++b) s_max = std::max(s_max, c.past[b] + c.tokens);
    s_max += 3;
    Tensor q = random_host(Shape{rows, qcols}, act, seed, c.q_scale);
    Tensor kc = random_host(Shape{c.batch, s_max, kvcols}, act, seed + 1);
    Tensor vc = random_host(Shape{c.batch, s_max, kvcols}, act, seed + 2);
    for (int b = 0; b < c.batch; ++b) {
      const int64_t first = (int64_t{b} * s_max + c.past[b] + c.tokens) * kvcols * 2;
      const int64_t count = (s_max - c.past[b] - c.tokens) * kvcols * 2;
      std::memset(static_cast<char*>(kc.data()) + first, 0xFF, count);
      std::memset(static_cast<char*>(vc.data()) + first, 0xFF, count);
    }
    const AttentionParams p{c.heads, c.kv_heads, c.head_dim, 1.f / std::sqrt(float(c.head_dim))};
    BatchLayout layout{c.batch, c.tokens, c.past.data()};
    Tensor ref = Tensor::empty(Shape{rows, qcols}, DType::kF32);
    attention_ref(ref, q, kc, vc, p, layout);

    Tensor out = poisoned(Shape{rows, qcols}, act);
    be_->attention(out, upload(q), upload(kc), upload(vc), p, layout);
    std::string past_str;
    for (int32_t x : c.past) past_str += std::to_string(x) + ",";
    expect_close(out, ref, tol(),
                 fmt::format("attention {} B={} T={} H={}/{} Dh={} past={}", tag, c.batch, c.tokens, c.heads,
                             c.kv_heads, c.head_dim, past_str));
  }

  // Every attention case on a backend with this kernel choice, once per forced split count (0: the
  // planner's).
  void run_attention_cases(AttentionKernel kernel, std::initializer_list<int> split_counts, uint32_t seed,
                           const std::string& tag) {
    for (int splits : split_counts) {
      CudaBackendOptions o;
      o.attention_kernel = kernel;
      o.attention_splits = splits;
      make_backend_with(o);
      uint32_t s = seed;
      for (const AttentionCase& c : attention_cases())
        run_attention_case(c, s += 7, fmt::format("{} splits={}", tag, splits));
    }
  }

  std::unique_ptr<CudaBackend> be_;
};

TEST(CudaBackendCreate, ReportsMissingGpuAsError) {
  std::string why;
  auto be = make_cuda_backend();
  if (gpu_present(&why)) {
    EXPECT_TRUE(be.is_ok()) << be.status().message();
  } else {
    ASSERT_FALSE(be.is_ok());
    EXPECT_NE(be.status().message().find("no usable CUDA GPU"), std::string::npos) << be.status().message();
  }
}

TEST(CudaBackendCreate, RejectsF32Activations) {
  CudaBackendOptions o;
  o.activation_dtype = DType::kF32;
  EXPECT_FALSE(CudaBackend::create(o).is_ok());
}

// Memory ops: host round trip, device-to-device copy, and zero-filled tensors (allocator hook).
TEST_P(CudaOps, MemoryOps) {
  Tensor host = random_host(Shape{7, 33}, act(), 5);
  Tensor a = upload(host);
  Tensor b = poisoned(Shape{7, 33}, act());
  be_->copy(b, a);
  Tensor back = download(b);
  EXPECT_EQ(std::memcmp(back.data(), host.data(), host.bytes()), 0);
  Tensor z = Tensor::zeros(Shape{1000}, DType::kF32, Device::kCuda);
  std::vector<float> zs(1000, 1.f);
  be_->copy_to_host(z, zs.data());
  for (float x : zs) ASSERT_EQ(x, 0.f);
}

TEST_P(CudaOps, Embedding) {
  for (DType table_dtype : {DType::kF32, act()}) {
    for (int64_t dim : {384, 172}) {
      const int64_t vocab = 301, tokens = 9;
      Tensor table = random_host(Shape{vocab, dim}, table_dtype, 11);
      std::vector<int32_t> ids = {0, 300, 5, 5, 17, 299, 1, 150, 42};
      Tensor ref = Tensor::empty(Shape{tokens, dim}, act());  // same rounding as the GPU: exact
      embedding_ref(ref, ids.data(), table);
      Tensor out = poisoned(Shape{tokens, dim}, act());
      be_->embedding(out, ids.data(), upload(table));
      expect_close(out, ref, 0.0, fmt::format("embedding D={} table {}", dim, dtype_name(table_dtype)));
    }
  }
}

TEST_P(CudaOps, RmsNorm) {
  for (int64_t dim : {64, 172, 4096}) {
    for (DType wdt : {DType::kF32, act()}) {
      Tensor x = random_host(Shape{5, dim}, act(), 21, 2.f);
      Tensor w = random_host(Shape{dim}, wdt, 22);
      Tensor ref = Tensor::empty(Shape{5, dim}, DType::kF32);
      rms_norm_ref(ref, x, w, 1e-5f);
      Tensor out = poisoned(Shape{5, dim}, act());
      be_->rms_norm(out, upload(x), upload(w), 1e-5f);
      expect_close(out, ref, tol(), fmt::format("rms_norm D={} weight {}", dim, dtype_name(wdt)));
    }
  }
}

TEST_P(CudaOps, AddRmsNorm) {
  for (int64_t dim : {64, 384, 4096}) {
    Tensor residual = random_host(Shape{3, dim}, act(), 31);
    Tensor delta = random_host(Shape{3, dim}, act(), 32, 0.5f);
    Tensor w = random_host(Shape{dim}, DType::kF32, 33);
    Tensor res_dev = upload(residual), delta_dev = upload(delta);
    Tensor ref = Tensor::empty(Shape{3, dim}, DType::kF32);
    add_rms_norm_ref(ref, residual, delta, w, 1e-6f);  // residual (host, act dtype) updated in place
    Tensor out = poisoned(Shape{3, dim}, act());
    be_->add_rms_norm(out, res_dev, delta_dev, upload(w), 1e-6f);
    expect_close(out, ref, tol(), fmt::format("add_rms_norm out D={}", dim));
    // Same f32 sum, same round-to-nearest-even: the stored residual matches bit for bit.
    expect_close(res_dev, residual, 0.0, fmt::format("add_rms_norm residual D={}", dim));
  }
}

TEST_P(CudaOps, Add) {
  Tensor x = random_host(Shape{3, 389}, act(), 41);
  Tensor delta = random_host(Shape{3, 389}, act(), 42);
  Tensor x_dev = upload(x);
  add_ref(x, delta);
  be_->add(x_dev, upload(delta));
  expect_close(x_dev, x, 0.0, "add (bitwise: one f32 add, one rounding)");
}

TEST_P(CudaOps, Swiglu) {
  for (int64_t f : {172, 1024}) {
    Tensor gate = random_host(Shape{3, f}, act(), 51, 3.f);
    Tensor up = random_host(Shape{3, f}, act(), 52);
    Tensor ref = Tensor::empty(Shape{3, f}, DType::kF32);
    swiglu_ref(ref, gate, up);
    Tensor out = poisoned(Shape{3, f}, act());
    be_->swiglu(out, upload(gate), upload(up));
    expect_close(out, ref, tol(), fmt::format("swiglu F={}", f));
  }
}

// Both kernels: the GEMV (T <= 4, K % 8 == 0) and cuBLAS (forced, and for the other shapes).
TEST_P(CudaOps, Matmul) {
  struct Case { int64_t t, k, n; bool bias; DType bias_dtype; };
  const Case cases[] = {{1, 64, 96, false, DType::kF32},   {3, 200, 173, true, DType::kF32},
                        {64, 384, 256, true, act()},       {17, 1024, 4, false, DType::kF32},
                        {1, 4096, 1000, true, DType::kF32}, {2, 4096, 4097, false, DType::kF32},
                        {1, 11008, 515, true, act()},      {4, 1000, 33, false, DType::kF32},
                        {1, 36, 7, false, DType::kF32}};
  for (MatmulKernel kernel : {MatmulKernel::kAuto, MatmulKernel::kCublas}) {
    CudaBackendOptions o;
    o.matmul_kernel = kernel;
    make_backend_with(o);
    uint32_t seed = 60;
    for (const Case& c : cases) {
      Tensor x = random_host(Shape{c.t, c.k}, act(), ++seed);
      Tensor w = random_host(Shape{c.n, c.k}, act(), ++seed, 1.f / std::sqrt(float(c.k)));
      Tensor bias = random_host(Shape{c.n}, c.bias_dtype, ++seed);
      Format fmt;
      ASSERT_TRUE(format_from_dtype(act(), &fmt));
      LinearWeight host_w{fmt, c.n, c.k, w, c.bias ? View(bias) : View{}};
      Tensor w_dev = upload(w), bias_dev = upload(bias);
      LinearWeight dev_w{fmt, c.n, c.k, w_dev, c.bias ? View(bias_dev) : View{}};
      Tensor ref = Tensor::empty(Shape{c.t, c.n}, DType::kF32);
      matmul_ref(ref, x, host_w);
      Tensor out = poisoned(Shape{c.t, c.n}, act());
      be_->matmul(out, upload(x), dev_w);
      expect_close(out, ref, tol(),
                   fmt::format("matmul{} T={} K={} N={} bias={}", kernel == MatmulKernel::kCublas ? " (cublas)" : "",
                               c.t, c.k, c.n, c.bias));
    }
  }
}

// Weights in another dtype than the activations are a caller error reported by the launcher
// (the model converts them at upload), not a crash inside cuBLAS.
TEST_P(CudaOps, MatmulRejectsMismatchedWeightDtype) {
  Tensor x = upload(random_host(Shape{2, 8}, act(), 70));
  Tensor w = upload(random_host(Shape{4, 8}, DType::kF32, 71));
  Tensor out = be_->alloc(Shape{2, 4}, act());
  LinearWeight lw{Format::kF32, 4, 8, w, View{}};
  const Status st = matmul_cuda(out, x, lw, nullptr, be_->stream());
  EXPECT_EQ(st.code(), StatusCode::kUnsupported) << st.message();
}

// Linears sharing an input in one GEMV launch (q/k/v-like and gate/up-like shapes) and through
// the per-member fallback (T too large, K % 8 != 0): each output matches its own reference.
TEST_P(CudaOps, MatmulGroup) {
  struct Case { int64_t t, k; std::vector<int64_t> ns; bool bias; };
  const Case cases[] = {{1, 256, {256, 64, 64}, false}, {3, 512, {1000, 1000}, true}, {8, 128, {96, 32, 32}, true},
                        {2, 36, {17, 5}, false}};
  uint32_t seed = 700;
  Format fmt;
  ASSERT_TRUE(format_from_dtype(act(), &fmt));
  for (const Case& c : cases) {
    Tensor x = random_host(Shape{c.t, c.k}, act(), ++seed);
    std::vector<Tensor> w_host, b_host, w_dev, b_dev, outs;
    std::vector<LinearWeight> lw;
    for (int64_t n : c.ns) {
      w_host.push_back(random_host(Shape{n, c.k}, act(), ++seed, 1.f / std::sqrt(float(c.k))));
      b_host.push_back(random_host(Shape{n}, DType::kF32, ++seed));
      w_dev.push_back(upload(w_host.back()));
      b_dev.push_back(upload(b_host.back()));
      outs.push_back(poisoned(Shape{c.t, n}, act()));
    }
    std::vector<View> out_views;
    std::vector<const LinearWeight*> ptrs;
    for (size_t m = 0; m < c.ns.size(); ++m) {
      lw.push_back(LinearWeight{fmt, c.ns[m], c.k, w_dev[m], c.bias ? View(b_dev[m]) : View{}});
      out_views.push_back(outs[m]);
    }
    for (const LinearWeight& l : lw) ptrs.push_back(&l);
    be_->matmul_group(out_views.data(), upload(x), ptrs.data(), static_cast<int>(ptrs.size()));
    for (size_t m = 0; m < c.ns.size(); ++m) {
      LinearWeight host_w{fmt, c.ns[m], c.k, w_host[m], c.bias ? View(b_host[m]) : View{}};
      Tensor ref = Tensor::empty(Shape{c.t, c.ns[m]}, DType::kF32);
      matmul_ref(ref, x, host_w);
      expect_close(outs[m], ref, tol(), fmt::format("matmul_group T={} K={} member {} N={}", c.t, c.k, m, c.ns[m]));
    }
  }
}

// x += a · wᵀ in one op (GEMV epilogue or cuBLAS beta = 1) against reference matmul + add.
TEST_P(CudaOps, MatmulAdd) {
  struct Case { int64_t t, k, n; };
  Format fmt;
  ASSERT_TRUE(format_from_dtype(act(), &fmt));
  uint32_t seed = 900;
  for (MatmulKernel kernel : {MatmulKernel::kAuto, MatmulKernel::kCublas}) {
    CudaBackendOptions o;
    o.matmul_kernel = kernel;
    make_backend_with(o);
    for (const Case& c : {Case{1, 1024, 384}, Case{3, 512, 100}, Case{40, 256, 72}}) {
      Tensor a = random_host(Shape{c.t, c.k}, act(), ++seed);
      Tensor w = random_host(Shape{c.n, c.k}, act(), ++seed, 1.f / std::sqrt(float(c.k)));
      Tensor x = random_host(Shape{c.t, c.n}, act(), ++seed);
      Tensor ref = Tensor::empty(Shape{c.t, c.n}, DType::kF32);
      matmul_ref(ref, a, LinearWeight{fmt, c.n, c.k, w, View{}});
      const std::vector<float> xs = values_of(x);
      for (int64_t i = 0; i < ref.numel(); ++i) ref.as<float>()[i] += xs[i];
      Tensor x_dev = upload(x), scratch = poisoned(Shape{c.t, c.n}, act());
      be_->matmul_add(x_dev, upload(a), LinearWeight{fmt, c.n, c.k, upload(w), View{}}, scratch);
      expect_close(x_dev, ref, tol(), fmt::format("matmul_add{} T={} K={} N={}",
                                                  kernel == MatmulKernel::kCublas ? " (cublas)" : "", c.t, c.k, c.n));
    }
  }
}

// The decode fusion points against the separate reference ops: rms_norm + grouped GEMV (q/k/v,
// gate/up) and SwiGLU computed while the down projection's GEMV loads its input, += residual
// (decode sizes take the fused kernel, T = 9 the separate-op fallback).
TEST_P(CudaOps, DecodeFusionPoints) {
  Format fmt;
  ASSERT_TRUE(format_from_dtype(act(), &fmt));
  uint32_t seed = 1000;
  for (int64_t t : {1, 3, 9}) {
    const int64_t d = 512, f = 1376, n1 = 384, n2 = 128;
    Tensor x = random_host(Shape{t, d}, act(), ++seed, 2.f);
    Tensor norm_w = random_host(Shape{d}, DType::kF32, ++seed);
    Tensor w1 = random_host(Shape{n1, d}, act(), ++seed, 0.05f), w2 = random_host(Shape{n2, d}, act(), ++seed, 0.05f);
    Tensor h_ref = Tensor::empty(Shape{t, d}, act());  // the norm rounded like the GPU stores it
    rms_norm_ref(h_ref, x, norm_w, 1e-5f);
    Tensor r1 = Tensor::empty(Shape{t, n1}, DType::kF32), r2 = Tensor::empty(Shape{t, n2}, DType::kF32);
    matmul_ref(r1, h_ref, LinearWeight{fmt, n1, d, w1, View{}});
    matmul_ref(r2, h_ref, LinearWeight{fmt, n2, d, w2, View{}});
    Tensor o1 = poisoned(Shape{t, n1}, act()), o2 = poisoned(Shape{t, n2}, act()), h = poisoned(Shape{t, d}, act());
    // The device tensors must outlive the call: a LinearWeight only views its weight.
    const Tensor w1_dev = upload(w1), w2_dev = upload(w2);
    const LinearWeight lw1{fmt, n1, d, w1_dev, View{}}, lw2{fmt, n2, d, w2_dev, View{}};
    const View outs[] = {o1, o2};
    const LinearWeight* ws[] = {&lw1, &lw2};
    be_->rms_norm_matmul_group(outs, upload(x), upload(norm_w), 1e-5f, ws, 2, h);
    expect_close(o1, r1, tol(), fmt::format("rms_norm+gemv T={} member 0", t));
    expect_close(o2, r2, tol(), fmt::format("rms_norm+gemv T={} member 1", t));

    Tensor gate = random_host(Shape{t, f}, act(), ++seed, 2.f), up = random_host(Shape{t, f}, act(), ++seed);
    Tensor wd = random_host(Shape{d, f}, act(), ++seed, 0.03f), resid = random_host(Shape{t, d}, act(), ++seed);
    Tensor a_ref = Tensor::empty(Shape{t, f}, act());
    swiglu_ref(a_ref, gate, up);
    Tensor down_ref = Tensor::empty(Shape{t, d}, DType::kF32);
    matmul_ref(down_ref, a_ref, LinearWeight{fmt, d, f, wd, View{}});
    const std::vector<float> rv = values_of(resid);
    for (int64_t i = 0; i < down_ref.numel(); ++i) down_ref.as<float>()[i] += rv[i];
    Tensor resid_dev = upload(resid), act_s = poisoned(Shape{t, f}, act()), proj_s = poisoned(Shape{t, d}, act());
    be_->swiglu_matmul_add(resid_dev, upload(gate), upload(up), LinearWeight{fmt, d, f, upload(wd), View{}}, act_s,
                           proj_s);
    expect_close(resid_dev, down_ref, tol(), fmt::format("swiglu+gemv+residual T={}", t));
  }
}

std::vector<float> inv_freq_for(int head_dim, double theta) {
  std::vector<float> f(head_dim / 2);
  for (int i = 0; i < head_dim / 2; ++i) f[i] = static_cast<float>(std::pow(theta, -2.0 * i / head_dim));
  return f;
}

TEST_P(CudaOps, Rope) {
  struct Case { int batch, tokens, heads, head_dim; std::vector<int32_t> past; };
  const Case cases[] = {{3, 4, 4, 64, {0, 7, 1000}}, {2, 13, 8, 8, {3, 0}}, {1, 1, 6, 128, {4095}}};
  uint32_t seed = 80;
  for (const Case& c : cases) {
    const int64_t rows = int64_t{c.batch} * c.tokens, cols = int64_t{c.heads} * c.head_dim;
    Tensor x = random_host(Shape{rows, cols}, act(), ++seed);
    Tensor x_dev = upload(x);
    const std::vector<float> inv_freq = inv_freq_for(c.head_dim, 10000.0);
    BatchLayout layout{c.batch, c.tokens, c.past.data()};
    Tensor ref = Tensor::empty(Shape{rows, cols}, DType::kF32);
    convert_to_f32(x.data(), x.dtype(), x.numel(), ref.as<float>());
    rope_ref(ref, c.heads, c.head_dim, inv_freq.data(), layout);
    be_->rope(x_dev, c.heads, c.head_dim, inv_freq.data(), layout);
    expect_close(x_dev, ref, tol(), fmt::format("rope B={} T={} H={} Dh={}", c.batch, c.tokens, c.heads, c.head_dim));
  }
}

// The fused rope(q) + rope(k) + kv_store against the three separate ops, bit for bit (same math).
TEST_P(CudaOps, RopeKvStore) {
  struct Case { int batch, tokens, heads, kv_heads, head_dim; std::vector<int32_t> past; };
  const Case cases[] = {{1, 1, 32, 8, 128, {700}}, {3, 5, 4, 2, 64, {0, 9, 30}}, {2, 17, 6, 6, 32, {3, 0}}};
  uint32_t seed = 800;
  for (const Case& c : cases) {
    const int64_t rows = int64_t{c.batch} * c.tokens, qc = int64_t{c.heads} * c.head_dim;
    const int64_t kc = int64_t{c.kv_heads} * c.head_dim;
    int s_max = 0;
    for (int32_t p : c.past) s_max = std::max(s_max, p + c.tokens + 2);
    const std::vector<float> inv_freq = inv_freq_for(c.head_dim, 10000.0);
    BatchLayout layout{c.batch, c.tokens, c.past.data()};
    Tensor q = random_host(Shape{rows, qc}, act(), ++seed), k = random_host(Shape{rows, kc}, act(), ++seed);
    Tensor v = random_host(Shape{rows, kc}, act(), ++seed);
    Tensor q1 = upload(q), k1 = upload(k), v1 = upload(v), q2 = upload(q), k2 = upload(k), v2 = upload(v);
    Tensor kc1 = poisoned(Shape{c.batch, s_max, kc}, act()), vc1 = poisoned(Shape{c.batch, s_max, kc}, act());
    Tensor kc2 = poisoned(Shape{c.batch, s_max, kc}, act()), vc2 = poisoned(Shape{c.batch, s_max, kc}, act());
    be_->rope(q1, c.heads, c.head_dim, inv_freq.data(), layout);
    be_->rope(k1, c.kv_heads, c.head_dim, inv_freq.data(), layout);
    be_->kv_store(kc1, vc1, k1, v1, layout);
    be_->rope_kv_store(q2, k2, v2, kc2, vc2, c.heads, c.kv_heads, c.head_dim, inv_freq.data(), layout);
    const std::string what = fmt::format("rope_kv_store B={} T={} H={}/{} Dh={}", c.batch, c.tokens, c.heads,
                                         c.kv_heads, c.head_dim);
    for (auto [a, b, name] : {std::tuple{&q1, &q2, "q"}, {&k1, &k2, "k"}, {&kc1, &kc2, "k cache"}, {&vc1, &vc2, "v cache"}}) {
      Tensor ha = download(*a), hb = download(*b);
      EXPECT_EQ(std::memcmp(ha.data(), hb.data(), ha.bytes()), 0) << what << ": " << name << " differs";
    }
  }
}

TEST_P(CudaOps, KvStore) {
  // Widths (elements) chosen for each copy path: 16-byte words, 4-byte words, single bytes.
  for (int64_t width : {128, 32, 18, 5}) {
    const int batch = 3, tokens = 4, s_max = 16;
    std::vector<int32_t> past = {0, 5, 12};
    BatchLayout layout{batch, tokens, past.data()};
    Tensor k = random_host(Shape{batch * tokens, width}, act(), 90);
    Tensor v = random_host(Shape{batch * tokens, width}, act(), 91);
    Tensor kc = poisoned(Shape{batch, s_max, width}, act()), vc = poisoned(Shape{batch, s_max, width}, act());
    be_->kv_store(kc, vc, upload(k), upload(v), layout);
    Tensor kc_host = download(kc), vc_host = download(vc);
    // Reference: poisoned host caches with the same rows written.
    Tensor kr = Tensor::empty(kc.shape(), act()), vr = Tensor::empty(vc.shape(), act());
    std::memset(kr.data(), 0xFF, kr.bytes());
    std::memset(vr.data(), 0xFF, vr.bytes());
    kv_store_ref(kr, vr, k, v, layout);
    EXPECT_EQ(std::memcmp(kc_host.data(), kr.data(), kr.bytes()), 0) << "k cache, width " << width;
    EXPECT_EQ(std::memcmp(vc_host.data(), vr.data(), vr.bytes()), 0) << "v cache, width " << width;
  }
}

const std::vector<AttentionCase>& attention_cases() {
  static const std::vector<AttentionCase> cases = {
      {1, 37, 4, 4, 64, {0}, 1.f},                 // prefill, MHA (fixture-llama-bpe shape)
      {3, 5, 6, 2, 64, {0, 17, 40}, 1.f},          // GQA 3, batched continuation
      {3, 1, 8, 2, 128, {0, 100, 300}, 1.f},       // decode, GQA 4
      {2, 1, 32, 8, 128, {700, 1}, 2.f},           // decode, Llama-3 head layout
      {2, 13, 8, 4, 8, {3, 0}, 3.f},               // stories260K head dim
      {1, 20, 4, 1, 96, {5}, 1.f},                 // MQA, Dh not a power of two
      {2, 9, 2, 1, 256, {0, 33}, 1.f},             // largest head dim
      {2, 6, 4, 2, 36, {2, 50}, 1.f},              // Dh % 8 != 0: scalar K/V loads
      {1, 130, 4, 2, 64, {70}, 4.f},               // several key tiles, peaked softmax
      // Tensor-core kernel (Dh 64/128): several 64-row and 64-key tiles, T not a multiple of 64,
      // chunked prefill (past > 0), GQA packing rows of 4 heads, decode with a long past.
      {1, 300, 8, 2, 128, {0}, 1.f},
      {2, 70, 4, 4, 64, {0, 100}, 2.f},
      {1, 129, 32, 8, 128, {64}, 1.f},
      {2, 1, 32, 32, 128, {600, 63}, 1.f},
      {3, 2, 8, 1, 64, {0, 5, 200}, 3.f},
      // Decode kernel (T·G <= 8 rows per kv head): G = 7 (Qwen2-7B heads), G = 8 with Dh 64 and a
      // past longer than 64 splits of one tile, T·G = 8 from two tokens, f16-range peaked scores.
      {2, 1, 28, 4, 128, {300, 5}, 1.f},
      {1, 1, 16, 2, 64, {4500}, 2.f},
      {3, 2, 8, 2, 128, {0, 64, 190}, 4.f},
  };
  return cases;
}

TEST_P(CudaOps, Attention) {
  uint32_t seed = 100;
  for (const AttentionCase& c : attention_cases()) run_attention_case(c, seed += 7, "auto");
}

// The flash-decoding path (partials + combine), forced on for every shape, prefill included
// (some splits then see no visible keys and must contribute nothing).
TEST_P(CudaOps, AttentionForcedSplits) { run_attention_cases(AttentionKernel::kAuto, {2, 5}, 300, "auto"); }

// The 16-rows-per-warp tensor-core kernel also on the decode shapes (kAuto sends those to the
// decode kernel), with and without splits.
TEST_P(CudaOps, AttentionTensorCoresEverywhere) {
  run_attention_cases(AttentionKernel::kTensorCores, {0, 3}, 700, "tc");
}

// The decode kernel's merge counters return to zero: the same decode call, repeated (as a graph
// replays it), gives the same result every time.
TEST_P(CudaOps, AttentionDecodeRepeats) {
  const AttentionCase c{2, 1, 32, 8, 128, {700, 90}, 1.f};
  for (int rep = 0; rep < 3; ++rep) run_attention_case(c, 900, fmt::format("decode repeat {}", rep));
}

// The key-split rule (plan_attention): decode splits until the GPU is full twice over; the
// row-tiled prefill kernels, whose splits need the separate combine pass, split only where the GPU
// is less than full and each split keeps at least 256 keys. Llama-2-7B heads on 132 SMs.
TEST(CudaAttentionPlan, PrefillSplitsOnlyALessThanFullGpuWithManyKeysPerSplit) {
  const AttentionParams p{32, 32, 128, 0.088f};
  const auto plan = [&](int tokens, int32_t past) {
    DeviceBatch b;
    b.tokens = tokens;
    b.past_host = &past;
    return plan_attention(p, b, 132, 0);
  };
  EXPECT_GT(plan(1, 576).splits, 1) << "decode, 32 blocks";
  EXPECT_EQ(plan(512, 0).splits, 1) << "prefill of 512 tokens: 256 blocks fill the GPU";
  EXPECT_EQ(plan(128, 0).splits, 1) << "prefill of 128 tokens: 128 keys make no 256-key split";
  const AttentionPlan chunk = plan(64, 4096);  // a 64-token chunk after 4096 cached keys: 32 blocks
  EXPECT_GT(chunk.splits, 1);
  EXPECT_GE(chunk.keys_per_split, 256);
}

// The CUDA-core kernel (the fallback for other head dims) on every case, and its split path.
TEST_P(CudaOps, AttentionCudaCores) { run_attention_cases(AttentionKernel::kCudaCores, {0, 3}, 500, "cuda-cores"); }

// Same generator as the host fill (model/synthetic.cpp): f32 math on both sides.
TEST_P(CudaOps, FillNormal) {
  const int64_t n = 1 << 20;
  Tensor dev = poisoned(Shape{n}, DType::kF32);
  ASSERT_TRUE(be_->fill_normal(dev, 42, 0.5f, 2.f).is_ok());
  Tensor host_ref = Tensor::empty(Shape{n}, DType::kF32);
  CpuBackend cpu;
  fill_normal_host(cpu, host_ref, 42, 0.5f, 2.f);
  expect_close(dev, host_ref, 1e-5, "fill_normal f32 vs host draw");
  const std::vector<float> v = values_of(download(dev));
  double mean = 0, var = 0;
  for (float x : v) mean += x / n;
  for (float x : v) var += (x - mean) * (x - mean) / n;
  EXPECT_NEAR(mean, 0.5, 0.01);
  EXPECT_NEAR(std::sqrt(var), 2.0, 0.01);
  Tensor act_dev = poisoned(Shape{1000, 37}, act());
  ASSERT_TRUE(be_->fill_normal(act_dev, 7, 0.f, 0.02f).is_ok());
  EXPECT_EQ(count_non_finite(values_of(download(act_dev))), 0);
}

// Greedy: the arg-max of the same (rounded) logits, ties to the lowest id; every row written.
TEST_P(CudaOps, SampleGreedy) {
  for (int64_t vocab : {1000, 32000, 128256}) {
    const int rows = 5;
    Tensor logits = random_host(Shape{rows, vocab}, act(), 130, 3.f);
    uint16_t* raw = static_cast<uint16_t*>(logits.data());
    raw[2 * vocab + 17] = raw[2 * vocab + 900] = act() == DType::kBF16 ? f32_to_bf16(50.f) : f32_to_f16(50.f);  // tie
    Tensor ids = poisoned(Shape{rows}, DType::kI32);
    ASSERT_TRUE(be_->sample(ids.as<int32_t>(), upload(logits), SampleParams{}).is_ok());
    std::vector<int32_t> got(rows);
    be_->copy_to_host(ids, got.data());
    const std::vector<float> f = values_of(logits);
    for (int r = 0; r < rows; ++r)
      EXPECT_EQ(got[r], argmax(f.data() + r * vocab, vocab)) << "row " << r << " V=" << vocab;
    EXPECT_EQ(got[2], 17);
  }
}

// Temperature sampling: 20000 rows of the same 8 logits (one draw per row) reproduce the
// softmax within 4 binomial standard deviations; top-k and top-p draws stay inside their sets.
TEST_P(CudaOps, SampleDistributionAndFilters) {
  const int rows = 20000, vocab = 8;
  const float base[vocab] = {1.f, 2.f, 0.5f, 3.f, -1.f, 2.5f, 0.f, 1.5f};
  std::vector<float> all(static_cast<size_t>(rows) * vocab);
  for (int r = 0; r < rows; ++r) std::copy(base, base + vocab, all.begin() + r * vocab);
  Tensor logits = Tensor::empty(Shape{rows, vocab}, act());
  convert_from_f32(all.data(), all.size(), act(), logits.data());
  const std::vector<float> rounded = values_of(logits);
  Tensor dev = upload(logits);
  struct Case { float temp; int top_k; float top_p; };
  for (const Case& c : {Case{1.f, 0, 1.f}, Case{0.7f, 0, 1.f}, Case{1.f, 3, 1.f}, Case{1.f, 0, 0.6f}, Case{1.f, 4, 0.9f}}) {
    Tensor ids = poisoned(Shape{rows}, DType::kI32);
    ASSERT_TRUE(be_->sample(ids.as<int32_t>(), dev, SampleParams{c.temp, c.top_k, c.top_p, 1234}).is_ok());
    std::vector<int32_t> got(rows);
    be_->copy_to_host(ids, got.data());
    // Reference distribution: softmax(z / T) restricted like the CPU Sampler (sorted, top-k, then top-p).
    std::vector<std::pair<float, int>> order;
    for (int i = 0; i < vocab; ++i) order.push_back({rounded[i] / c.temp, i});
    std::sort(order.begin(), order.end(), [](auto a, auto b) { return a.first > b.first; });
    size_t keep = c.top_k > 0 ? c.top_k : vocab;
    std::vector<double> w(keep);
    double total = 0;
    for (size_t i = 0; i < keep; ++i) total += w[i] = std::exp(order[i].first - order[0].first);
    if (c.top_p < 1.f) {
      double cum = 0;
      for (size_t i = 0; i < keep; ++i)
        if ((cum += w[i] / total) >= c.top_p) { keep = i + 1; break; }
      total = 0;
      for (size_t i = 0; i < keep; ++i) total += w[i];
    }
    std::vector<double> want(vocab, 0.0), seen(vocab, 0.0);
    for (size_t i = 0; i < keep; ++i) want[order[i].second] = w[i] / total;
    for (int32_t id : got) {
      ASSERT_TRUE(id >= 0 && id < vocab) << id;
      seen[id] += 1.0 / rows;
    }
    for (int i = 0; i < vocab; ++i) {
      const double sd = std::sqrt(std::max(want[i] * (1 - want[i]), 1e-9) / rows);
      EXPECT_NEAR(seen[i], want[i], 4 * sd + 1e-9)
          << "id " << i << " T=" << c.temp << " top_k=" << c.top_k << " top_p=" << c.top_p;
    }
    std::printf("  sample T=%.1f top_k=%d top_p=%.1f: p(3) seen %.4f want %.4f\n", c.temp, c.top_k, c.top_p, seen[3],
                want[3]);
  }
}

// The step counter keys the draw: two steps give different draws, the same step the same.
TEST_P(CudaOps, SampleStepCounterAndHistory) {
  const int rows = 64, vocab = 1000;
  Tensor logits = upload(random_host(Shape{rows, vocab}, act(), 140, 0.1f));
  Tensor step = be_->alloc(Shape{1}, DType::kI32), hist = be_->alloc(Shape{rows, 4}, DType::kI32);
  Tensor ids = be_->alloc(Shape{rows}, DType::kI32);
  std::vector<int32_t> h(rows * 4, -7);
  be_->copy_from_host(h.data(), hist);
  const SampleParams p{1.f, 0, 1.f, 99};
  for (int32_t s : {0, 1, 0}) {
    be_->copy_from_host(&s, step);
    ASSERT_TRUE(be_->sample(ids.as<int32_t>(), logits, p, step.as<int32_t>(), hist.as<int32_t>(), 4).is_ok());
  }
  be_->copy_to_host(hist, h.data());
  int same = 0;
  for (int r = 0; r < rows; ++r) {
    EXPECT_TRUE(h[r * 4] >= 0 && h[r * 4] < vocab && h[r * 4 + 1] >= 0) << r;
    EXPECT_EQ(h[r * 4 + 2], -7) << "slot 2 was never a step";
    same += h[r * 4] == h[r * 4 + 1];
  }
  EXPECT_LT(same, rows / 4) << "steps 0 and 1 drew the same ids: the step does not key the draw";
  std::vector<int32_t> last(rows);
  be_->copy_to_host(ids, last.data());
  for (int r = 0; r < rows; ++r) EXPECT_EQ(last[r], h[r * 4]) << "step 0 drawn twice differs";
}

TEST_P(CudaOps, DecodeAdvance) {
  std::vector<int32_t> past = {3, 0, 99};
  int32_t step0 = 5;
  Tensor dp = upload_i32(past), ds = upload_i32({step0});
  ASSERT_TRUE(be_->decode_advance(dp.as<int32_t>(), 3, ds.as<int32_t>()).is_ok());
  ASSERT_TRUE(be_->decode_advance(dp.as<int32_t>(), 3, ds.as<int32_t>()).is_ok());
  std::vector<int32_t> got(3);
  int32_t step = 0;
  be_->copy_to_host(dp, got.data());
  be_->copy_to_host(ds, &step);
  EXPECT_EQ(got, (std::vector<int32_t>{5, 2, 101}));
  EXPECT_EQ(step, 7);
  EXPECT_EQ(be_->decode_advance(dp.as<int32_t>(), 0, nullptr).code(), StatusCode::kInvalidArgument);
}

TEST_P(CudaOps, CrossEntropy) {
  for (int64_t vocab : {1000, 32000}) {
    const int64_t tokens = 5;
    Tensor logits = random_host(Shape{tokens, vocab}, act(), 120, 3.f);
    std::vector<int32_t> targets = {0, static_cast<int32_t>(vocab - 1), 7, 7, static_cast<int32_t>(vocab / 2)};
    Tensor ref = Tensor::empty(Shape{tokens}, DType::kF32);
    cross_entropy_ref(ref.as<float>(), logits, targets.data());
    std::vector<float> nll(tokens, NAN);
    be_->cross_entropy(nll.data(), upload(logits), targets.data());
    Tensor got = Tensor::empty(Shape{tokens}, DType::kF32);
    std::memcpy(got.data(), nll.data(), tokens * sizeof(float));
    EXPECT_EQ(count_non_finite(nll), 0);
    const double err = test::rel_l2_error(values_of(got), values_of(ref));
    EXPECT_LE(err, kNllTol) << "cross_entropy V=" << vocab;
    std::printf("  %-48s rel err %.3e (tol %.0e)\n", fmt::format("cross_entropy V={}", vocab).c_str(), err, kNllTol);
  }
}

INSTANTIATE_TEST_SUITE_P(Act, CudaOps, ::testing::Values(DType::kBF16, DType::kF16),
                         [](const ::testing::TestParamInfo<DType>& info) {
                           return std::string(dtype_name(info.param));
                         });

}  // namespace
}  // namespace compactor
