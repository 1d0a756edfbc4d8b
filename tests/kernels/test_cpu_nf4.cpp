// CPU matmul on NF4 weights (backend/cpu/cpu_nf4.h via matmul_quantized_cpu) against the spec:
// dequantize_nf4_ref + a naive double-precision GEMM, for rows M in {1, 3, 16, 64} (dots below 8
// rows, sgemm from 8; the fused GEMV below the dense GEMM threshold with a blocked tail), odd shapes (partial last block, N not a multiple of the row block), block
// sizes 64 and 32, with and without bias, through matmul_quantized_cpu, the blocked entry point and
// CpuBackend::matmul; plus the abort message for inconsistent views.
// Run: build-*/tests/test_cpu_nf4
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/cpu_qmatmul.h"

namespace compactor {
namespace {

std::vector<float> random_vector(int64_t n, uint32_t seed, float std = 1.f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.f, std);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

PackedNF4 random_nf4(int64_t n, int64_t k, int block, uint32_t seed) {
  const std::vector<float> w = random_vector(n * k, seed, 0.02f);
  auto packed = pack_nf4(quantize_nf4(w.data(), n, k, block));
  COMPACTOR_ASSERT(packed.is_ok(), "{}", packed.status().message());
  return std::move(packed).value();
}

// out[r, j] = sum_k x[r, k] w[j, k] (+ bias[j]) in double; w: [N, K]
std::vector<double> naive_gemm(const std::vector<float>& x, const std::vector<float>& w, const float* bias, int64_t m,
                               int64_t n, int64_t k) {
  std::vector<double> y(m * n);
  for (int64_t r = 0; r < m; ++r)
    for (int64_t j = 0; j < n; ++j) {
      double s = bias ? bias[j] : 0.0;
      for (int64_t i = 0; i < k; ++i) s += double(x[r * k + i]) * w[j * k + i];
      y[r * n + j] = s;
    }
  return y;
}

void expect_close(const std::vector<float>& got, const std::vector<double>& ref, const std::vector<float>& x,
                  const std::vector<float>& w, int64_t m, int64_t n, int64_t k, const std::string& what) {
  int bad = 0;
  for (int64_t r = 0; r < m; ++r)
    for (int64_t j = 0; j < n; ++j) {
      double mag = 0;
      for (int64_t i = 0; i < k; ++i) mag += std::fabs(x[r * k + i] * w[j * k + i]);
      const double err = std::fabs(got[r * n + j] - ref[r * n + j]);
      if (!(err <= 1e-5 * (1 + mag)) && bad++ < 5)
        ADD_FAILURE() << what << ": out[" << r << ", " << j << "] = " << got[r * n + j] << " vs " << ref[r * n + j];
    }
  EXPECT_EQ(bad, 0) << what;
}

TEST(CpuNF4, MatmulMatchesDequantizeRefPlusNaiveGemm) {
  struct Shape3 { int64_t n, k; int block; };
  const Shape3 shapes[] = {{37, 200, 64}, {130, 96, 64}, {5, 1000, 64}, {300, 128, 32}};
  CpuBackend backend;
  uint32_t seed = 21;
  for (const auto& s : shapes) {
    const int64_t n = s.n, k = s.k;
    const PackedNF4 p = random_nf4(n, k, s.block, seed++);
    std::vector<float> dense(n * k);
    dequantize_nf4_ref(p.ref(), dense.data());
    std::vector<float> bias = random_vector(n, seed++);
    for (bool with_bias : {false, true}) {
      View bias_view = with_bias ? View{bias.data(), Shape{n}, DType::kF32, Device::kCpu} : View{};
      const LinearWeight w = linear_weight_of(p, bias_view);
      ASSERT_TRUE(w.quantized());
      ASSERT_EQ(w.bits(), 4);
      std::vector<float> bound(n * k);
      dequantize_linear_ref(w, bound.data());
      EXPECT_EQ(bound, dense);
      for (int64_t m : {1, 3, 16, 64}) {
        const std::string what = fmt::format("nf4 block {} N {} K {} M {} bias {}", s.block, n, k, m, with_bias);
        std::vector<float> x = random_vector(m * k, seed++);
        const std::vector<double> ref = naive_gemm(x, dense, with_bias ? bias.data() : nullptr, m, n, k);
        std::vector<float> fast(m * n, NAN), blocked(m * n, NAN), via_backend(m * n, NAN), spec(m * n, NAN);
        View xv{x.data(), Shape{m, k}, DType::kF32, Device::kCpu};
        matmul_quantized_cpu(View{fast.data(), Shape{m, n}, DType::kF32, Device::kCpu}, xv, w);
        matmul_quantized_blocked_cpu(View{blocked.data(), Shape{m, n}, DType::kF32, Device::kCpu}, xv, w);
        matmul_quantized_ref(View{spec.data(), Shape{m, n}, DType::kF32, Device::kCpu}, xv, w);
        backend.matmul(View{via_backend.data(), Shape{m, n}, DType::kF32, Device::kCpu}, xv, w);
        expect_close(fast, ref, x, dense, m, n, k, what);
        expect_close(blocked, ref, x, dense, m, n, k, what + " (blocked)");
        expect_close(spec, ref, x, dense, m, n, k, what + " (matmul_quantized_ref)");
        EXPECT_EQ(fast, via_backend) << what;
      }
    }
  }
}

TEST(CpuNF4, LinearWeightOfCarriesTheContract) {
  const PackedNF4 p = random_nf4(9, 70, 64, 3);
  const LinearWeight w = linear_weight_of(p);
  EXPECT_EQ(w.format, Format::kNF4);
  EXPECT_EQ(w.group_size, 64);
  EXPECT_EQ(w.qzeros.data, nullptr);
  EXPECT_EQ(w.g_idx.data, nullptr);
  EXPECT_EQ(w.storage_bytes(), p.bytes());
  std::vector<float> rows(3 * 70), all(9 * 70);
  dequantize_nf4_ref(p.ref(), all.data());
  dequantize_nf4_rows(nf4_ref(w), 4, 3, rows.data());
  EXPECT_EQ(rows, std::vector<float>(all.begin() + 4 * 70, all.begin() + 7 * 70));
}

TEST(CpuNF4, FusedGemvCoversWholeLaneGroups) {
  const PackedNF4 p = random_nf4(37, 200, 64, 5);
  const NF4Ref r = p.ref();
  if (!nf4_fused_eligible(r)) GTEST_SKIP() << "no AVX2/AVX-512 fused path in this build";
  std::vector<float> dense(37 * 200);
  dequantize_nf4_ref(r, dense.data());
  for (int64_t m : {1, 2, 3, 4, 5}) {
    const std::vector<float> x = random_vector(m * 200, 40 + m);
    std::vector<float> y(m * 37, NAN);
    const int64_t done = nf4_fused_gemv(r, x.data(), m, y.data());
    EXPECT_EQ(done % 8, 0);
    EXPECT_GE(done, 32);  // two AVX-512 lane groups (four of AVX2)
    const std::vector<double> ref = naive_gemm(x, dense, nullptr, m, 37, 200);
    for (int64_t row = 0; row < m; ++row)
      for (int64_t j = 0; j < done; ++j)
        EXPECT_NEAR(y[row * 37 + j], ref[row * 37 + j], 1e-5 * (1 + std::fabs(ref[row * 37 + j])))
            << "M " << m << " out[" << row << ", " << j << "]";
  }
}

TEST(CpuNF4DeathTest, InconsistentViewsAbortWithTheTensorName) {
  const PackedNF4 p = random_nf4(8, 128, 64, 4);
  LinearWeight w = linear_weight_of(p);
  w.group_size = 32;  // scales now have the wrong number of blocks
  std::vector<float> x(128), y(8);
  EXPECT_DEATH(matmul_quantized_cpu(View{y.data(), Shape{1, 8}}, View{x.data(), Shape{1, 128}}, w), "matmul.scales");
  w = linear_weight_of(p);
  w.nested_offset = View{};
  EXPECT_DEATH(matmul_quantized_cpu(View{y.data(), Shape{1, 8}}, View{x.data(), Shape{1, 128}}, w),
               "matmul.nested_offset' is missing");
}

}  // namespace
}  // namespace compactor
