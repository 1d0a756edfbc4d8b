// CPU matmul on packed intN weights (backend/cpu/cpu_qmatmul.h) against the spec
// (dequantize_ref + matmul_ref): every format × group (per-channel, 32, 128, act-order) × rows
// M in {1, 3, 16, 64} × odd shapes (N = 37: two fused 16-row blocks and a blocked tail), with and
// without bias, through matmul_quantized_cpu (fused GEMV where eligible), the blocked path (dots
// below 8 rows, sgemm from 8) and CpuBackend::matmul.
// Run: build-*/tests/test_cpu_qmatmul
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/cpu_qmatmul.h"
#include "backend/cpu/ops_ref.h"

namespace compactor {
namespace {

QuantizedLinear random_linear(int bits, int group, bool act_order, int64_t n, int64_t k, uint32_t seed) {
  std::mt19937 rng(seed);
  QuantizedLinear q;
  q.spec = QuantSpec{bits, group, false};
  q.out_features = n;
  q.in_features = k;
  std::uniform_int_distribution<int> code(0, (1 << bits) - 1);
  std::uniform_real_distribution<float> scale(0.01f, 0.1f);
  q.codes.resize(n * k);
  for (auto& c : q.codes) c = static_cast<uint8_t>(code(rng));
  q.scales.resize(n * q.groups());
  q.zeros.resize(n * q.groups());
  for (auto& s : q.scales) s = scale(rng);
  for (auto& z : q.zeros) z = static_cast<float>(code(rng));
  if (act_order) {
    q.g_idx.resize(k);
    for (int64_t i = 0; i < k; ++i) q.g_idx[i] = static_cast<int32_t>(i / group);
    std::shuffle(q.g_idx.begin(), q.g_idx.end(), rng);
  }
  return q;
}

std::vector<float> random_vector(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.f, 1.f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

struct Case {
  int bits;
  int group;
  bool act_order;
};

// |fast - ref| <= 1e-4 * (1 + sum_k |x||w|) per output: f32 accumulation in another order.
void expect_close_outputs(const std::vector<float>& fast, const std::vector<float>& ref, const std::vector<float>& x,
                          const std::vector<float>& w, int64_t m, int64_t n, int64_t k, const std::string& what) {
  int bad = 0;
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t j = 0; j < n; ++j) {
      double mag = 0;
      for (int64_t i = 0; i < k; ++i) mag += std::fabs(x[r * k + i] * w[j * k + i]);
      const double err = std::fabs(double(fast[r * n + j]) - ref[r * n + j]);
      if (err > 1e-5 * (1 + mag) && bad++ < 5)
        ADD_FAILURE() << what << ": out[" << r << ", " << j << "] = " << fast[r * n + j] << " vs reference "
                      << ref[r * n + j] << " (|x||w| " << mag << ")";
    }
  }
  EXPECT_EQ(bad, 0) << what;
}

TEST(CpuQmatmul, MatchesDequantizeRefPlusMatmulRef) {
  const Case cases[] = {{8, 0, false},  {8, 128, false}, {4, 0, false},  {4, 32, false},  {4, 128, false},
                        {4, 32, true},  {3, 32, false},  {3, 128, false}, {3, 64, true},  {2, 32, false},
                        {2, 128, false}, {2, 32, true}};
  const std::pair<int64_t, int64_t> shapes[] = {{37, 200}, {130, 96}, {5, 1000}};
  CpuBackend backend;
  uint32_t seed = 11;
  for (const Case& c : cases) {
    for (auto [n, k] : shapes) {
      const QuantizedLinear q = random_linear(c.bits, c.group, c.act_order, n, k, seed++);
      auto packed = pack_linear(q);
      ASSERT_TRUE(packed.is_ok()) << packed.status().message();
      std::vector<float> bias = random_vector(n, seed++);
      for (bool with_bias : {false, true}) {
        View bias_view = with_bias ? View{bias.data(), Shape{n}, DType::kF32, Device::kCpu} : View{};
        const LinearWeight w = linear_weight_of(*packed, bias_view);
        std::vector<float> dense(n * k);
        dequantize_linear_ref(w, dense.data());
        for (int64_t m : {1, 3, 16, 64}) {
          const std::string what = fmt::format("int{} group {} act {} N {} K {} M {} bias {}", c.bits, c.group,
                                               c.act_order, n, k, m, with_bias);
          std::vector<float> x = random_vector(m * k, seed++);
          std::vector<float> ref(m * n), fast(m * n, NAN), blocked(m * n, NAN), via_backend(m * n, NAN);
          View xv{x.data(), Shape{m, k}, DType::kF32, Device::kCpu};
          matmul_quantized_ref(View{ref.data(), Shape{m, n}, DType::kF32, Device::kCpu}, xv, w);
          matmul_quantized_cpu(View{fast.data(), Shape{m, n}, DType::kF32, Device::kCpu}, xv, w);
          matmul_quantized_blocked_cpu(View{blocked.data(), Shape{m, n}, DType::kF32, Device::kCpu}, xv, w);
          backend.matmul(View{via_backend.data(), Shape{m, n}, DType::kF32, Device::kCpu}, xv, w);
          expect_close_outputs(fast, ref, x, dense, m, n, k, what);
          expect_close_outputs(blocked, ref, x, dense, m, n, k, what + " (blocked)");
          EXPECT_EQ(fast, via_backend) << what;
        }
      }
    }
  }
}

TEST(CpuQmatmul, DequantizeOfBoundWeightEqualsUnpackedDequantize) {
  const QuantizedLinear q = random_linear(4, 32, true, 9, 64, 3);
  auto packed = pack_linear(q);
  ASSERT_TRUE(packed.is_ok());
  const LinearWeight w = linear_weight_of(*packed);
  EXPECT_EQ(w.format, Format::kInt4);
  EXPECT_EQ(w.bits(), 4);
  EXPECT_TRUE(w.quantized());
  std::vector<float> a(9 * 64), b(9 * 64);
  dequantize_linear_ref(w, a.data());
  QuantizedLinear rounded = q;
  round_scales_to_storage(rounded);
  dequantize_ref(rounded, b.data());
  EXPECT_EQ(a, b);
}

TEST(CpuQmatmulDeathTest, InconsistentPackedViewsAbortWithTheTensorName) {
  const QuantizedLinear q = random_linear(4, 32, false, 8, 64, 4);
  auto packed = pack_linear(q);
  ASSERT_TRUE(packed.is_ok());
  LinearWeight w = linear_weight_of(*packed);
  w.group_size = 16;  // scales now have the wrong number of groups
  std::vector<float> x(64), y(8);
  EXPECT_DEATH(matmul_quantized_cpu(View{y.data(), Shape{1, 8}}, View{x.data(), Shape{1, 64}}, w), "matmul.scales");
}

}  // namespace
}  // namespace compactor
