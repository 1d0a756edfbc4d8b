// Algorithm properties of the weight quantizers on synthetic matrices with correlated inputs
// (CONVENTIONS.md ring 3): RTN's grid, the Gram-matrix error identity, GPTQ error ≤ RTN error for
// every bits/group/act-order/symmetry case, static groups, symmetric codes centred, 8-bit error
// tiny, singular Hessians (dead inputs, fewer tokens than inputs), bad specs named.
// Run: build-comp/tests/test_quantizers
#include <cmath>
#include <random>

#include <gtest/gtest.h>

#include "compress/gptq.h"
#include "compress/hessian.h"
#include "core/dtype.h"
#include "compress/quant_grid.h"

namespace compactor {
namespace {

// Inputs X [T, K] = Z·A + noise with a few outlier channels (LLM activations are low-rank-ish and
// have outlier features); weights W [N, K] Gaussian.
struct Problem {
  int64_t t, k, n;
  std::vector<float> x, w;
};

Problem make_problem(int64_t t, int64_t k, int64_t n, uint32_t seed, int64_t dead_inputs = 0) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.f, 1.f);
  const int64_t r = 16;
  std::vector<float> z(t * r), a(r * k);
  for (float& v : z) v = g(rng);
  for (float& v : a) v = g(rng);
  Problem p{t, k, n, std::vector<float>(t * k), std::vector<float>(n * k)};
  for (int64_t i = 0; i < t; ++i)
    for (int64_t j = 0; j < k; ++j) {
      float s = 0.1f * g(rng);
      for (int64_t q = 0; q < r; ++q) s += z[i * r + q] * a[q * k + j];
      if (j % 37 == 5) s *= 8.f;     // outlier channels
      if (j < dead_inputs) s = 0.f;  // never-active inputs
      p.x[i * k + j] = s;
    }
  for (float& v : p.w) v = 0.05f * g(rng);
  return p;
}

InputStats stats_of(const Problem& p) {
  InputStats s(p.k);
  s.add(p.x.data(), p.t);
  return s;
}

double rel_error(const Problem& p, const QuantizedLinear& q, InputStats& s) {
  std::vector<float> deq = dequantize_linear(q);
  return relative_output_error(p.w.data(), deq.data(), p.n, p.k, s.gram().data());
}

TEST(QuantGrid, AsymmetricGridCoversTheRangeAndZeroIsExact) {
  QuantSpec spec{4, 0, false};
  QParams p = qparams_from_range(-0.3f, 1.2f, spec);
  EXPECT_NEAR(p.scale, 1.5f / 15.f, 1e-3f);
  EXPECT_EQ(p.zero, std::nearbyint(0.3f / p.scale));
  EXPECT_EQ(dequantize_code(quantize_code(0.f, p, 15), p), 0.f);
  EXPECT_EQ(quantize_code(5.f, p, 15), 15.f);
  EXPECT_EQ(quantize_code(-5.f, p, 15), 0.f);
  // A positive-only group still includes 0 (GPTQ's grid).
  QParams pos = qparams_from_range(0.5f, 1.f, spec);
  EXPECT_EQ(pos.zero, 0.f);
  // An all-zero group gets a valid grid.
  QParams zero = qparams_from_range(0.f, 0.f, spec);
  EXPECT_GT(zero.scale, 0.f);
}

TEST(QuantGrid, ScalesAreF16Representable) {
  QParams p = qparams_from_range(-0.123456f, 0.654321f, QuantSpec{3, 0, false});
  EXPECT_EQ(p.scale, f16_to_f32(f32_to_f16(p.scale)));
}

TEST(QuantGrid, RtnErrorIsAtMostHalfAStep) {
  Problem p = make_problem(8, 128, 16, 1);
  for (int bits : {2, 3, 4, 8}) {
    QuantSpec spec{bits, 32, false};
    QuantizedLinear q = rtn_quantize(p.w.data(), p.n, p.k, spec);
    std::vector<float> deq = dequantize_linear(q);
    for (int64_t n = 0; n < p.n; ++n)
      for (int64_t k = 0; k < p.k; ++k) {
        const float step = q.scales[n * q.groups() + k / 32];
        ASSERT_LE(std::fabs(deq[n * p.k + k] - p.w[n * p.k + k]), 0.5f * step * 1.001f) << bits << " " << n << " " << k;
      }
  }
}

TEST(QuantGrid, SymmetricCodesAreCentred) {
  Problem p = make_problem(8, 256, 32, 2);
  for (int bits : {2, 3, 4, 8}) {
    QuantizedLinear q = rtn_quantize(p.w.data(), p.n, p.k, QuantSpec{bits, 64, true});
    for (float z : q.zeros) ASSERT_EQ(z, static_cast<float>(1 << (bits - 1)));
    double mean = 0, sq = 0;
    for (uint8_t c : q.codes) mean += c, sq += static_cast<double>(c) * c;
    const double n = static_cast<double>(q.codes.size());
    mean /= n;
    const double sd = std::sqrt(sq / n - mean * mean);
    // Zero-mean weights: codes average to the zero point (sampling noise + half a step of bias).
    EXPECT_NEAR(mean, (1 << (bits - 1)), 4 * sd / std::sqrt(n) + 0.5) << bits;
  }
}

TEST(QuantGrid, BadSpecsAreNamedErrors) {
  Status s = check_quant_spec(QuantSpec{4, 96, false}, 256, "model.layers.0.mlp.down_proj");
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("does not divide the input width 256"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("down_proj"), std::string::npos);
  Status b = check_quant_spec(QuantSpec{5, 128, false}, 256, "m");
  EXPECT_EQ(b.code(), StatusCode::kUnsupported);
  EXPECT_NE(b.message().find("5-bit"), std::string::npos);
  EXPECT_TRUE(check_quant_spec(QuantSpec{3, 0, true}, 250, "m").is_ok());
}

TEST(Hessian, GramErrorEqualsTheDirectOutputError) {
  Problem p = make_problem(64, 48, 8, 3);
  InputStats s = stats_of(p);
  std::vector<float> w2 = p.w;
  for (size_t i = 0; i < w2.size(); i += 3) w2[i] += 0.01f;
  double num = 0, den = 0;
  for (int64_t t = 0; t < p.t; ++t)
    for (int64_t n = 0; n < p.n; ++n) {
      double y = 0, y2 = 0;
      for (int64_t k = 0; k < p.k; ++k) {
        y += static_cast<double>(p.x[t * p.k + k]) * p.w[n * p.k + k];
        y2 += static_cast<double>(p.x[t * p.k + k]) * w2[n * p.k + k];
      }
      num += (y - y2) * (y - y2);
      den += y * y;
    }
  EXPECT_NEAR(relative_output_error(p.w.data(), w2.data(), p.n, p.k, s.gram().data()), num / den, 1e-4 * num / den);
  std::vector<float> h = s.hessian();
  EXPECT_NEAR(h[5 * p.k + 7], 2.0 * s.gram()[5 * p.k + 7] / p.t, 1e-6);
  EXPECT_FLOAT_EQ(h[5 * p.k + 7], h[7 * p.k + 5]);
}

struct Case {
  int bits, group;
  bool act_order, sym, static_groups;
};

TEST(Gptq, ErrorIsAtMostRtnOnCorrelatedInputsInEveryCase) {
  Problem p = make_problem(1024, 256, 48, 4);
  InputStats s = stats_of(p);
  for (int bits : {2, 3, 4, 8})
    for (int group : {0, 32, 64, 128})
      for (bool act : {false, true})
        for (bool sym : {false, true})
          for (bool stat : {false, true}) {
            if (stat && (group == 0 || !act)) continue;
            Case c{bits, group, act, sym, stat};
            GptqOptions o;
            o.spec = QuantSpec{bits, group, sym};
            o.act_order = act;
            o.static_groups = stat;
            auto r = gptq_quantize(p.w.data(), p.n, p.k, s.hessian(), o, "synthetic");
            ASSERT_TRUE(r.is_ok()) << r.status().message();
            const double gptq = rel_error(p, r->q, s);
            const double rtn = rel_error(p, rtn_quantize(p.w.data(), p.n, p.k, o.spec), s);
            SCOPED_TRACE(::testing::Message() << "bits " << c.bits << " group " << c.group << " act " << c.act_order
                                              << " sym " << c.sym << " static " << c.static_groups);
            EXPECT_LE(gptq, rtn) << "gptq " << gptq << " rtn " << rtn;
            if (bits <= 4) {
              EXPECT_LT(gptq, 0.8 * rtn) << "gptq " << gptq << " rtn " << rtn;
            }
            EXPECT_EQ(r->q.g_idx.empty(), !(act && !stat && group > 0));
          }
}

TEST(Gptq, ActOrderGroupIndexMapsColumnsToTheirSweepGroup) {
  Problem p = make_problem(512, 128, 16, 5);
  InputStats s = stats_of(p);
  GptqOptions o;
  o.spec = QuantSpec{4, 32, false};
  o.act_order = true;
  auto r = gptq_quantize(p.w.data(), p.n, p.k, s.hessian(), o, "m");
  ASSERT_TRUE(r.is_ok());
  ASSERT_EQ(r->q.g_idx.size(), 128u);
  std::vector<int> per_group(4, 0);
  for (int32_t g : r->q.g_idx) per_group.at(g)++;
  for (int c : per_group) EXPECT_EQ(c, 32);
  // The outlier channels (largest H_ii) are swept first: they land in group 0.
  EXPECT_EQ(r->q.g_idx[5], 0);
  EXPECT_EQ(r->q.g_idx[42], 0);
}

TEST(Gptq, StaticGroupsKeepTheGridOfTheOriginalWeights) {
  Problem p = make_problem(512, 128, 16, 6);
  InputStats s = stats_of(p);
  GptqOptions o;
  o.spec = QuantSpec{4, 32, true};
  o.act_order = true;
  o.static_groups = true;
  auto r = gptq_quantize(p.w.data(), p.n, p.k, s.hessian(), o, "m");
  ASSERT_TRUE(r.is_ok());
  QuantizedLinear rtn = rtn_quantize(p.w.data(), p.n, p.k, o.spec);
  EXPECT_EQ(r->q.scales, rtn.scales);
  EXPECT_EQ(r->q.zeros, rtn.zeros);
  EXPECT_TRUE(r->q.g_idx.empty());
}

TEST(Gptq, EightBitErrorIsTiny) {
  Problem p = make_problem(1024, 256, 32, 7);
  InputStats s = stats_of(p);
  GptqOptions o;
  o.spec = QuantSpec{8, 0, false};
  auto r = gptq_quantize(p.w.data(), p.n, p.k, s.hessian(), o, "m");
  ASSERT_TRUE(r.is_ok());
  EXPECT_LT(rel_error(p, r->q, s), 1e-4);
}

TEST(Gptq, DeadInputsAreZeroedAndTheRestStillBeatsRtn) {
  Problem p = make_problem(1024, 128, 16, 8, /*dead_inputs=*/10);
  InputStats s = stats_of(p);
  GptqOptions o;
  o.spec = QuantSpec{4, 32, false};
  auto r = gptq_quantize(p.w.data(), p.n, p.k, s.hessian(), o, "m");
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  EXPECT_EQ(r->stats.dead_columns, 10);
  std::vector<float> deq = dequantize_linear(r->q);
  for (int64_t n = 0; n < p.n; ++n)
    for (int64_t k = 0; k < 10; ++k) EXPECT_EQ(deq[n * p.k + k], 0.f);
  EXPECT_LE(rel_error(p, r->q, s), rel_error(p, rtn_quantize(p.w.data(), p.n, p.k, o.spec), s));
}

TEST(Gptq, FewerTokensThanInputsIsHandledByDamping) {
  Problem p = make_problem(24, 128, 16, 9);  // rank(XᵀX) <= 24 < 128: singular
  InputStats s = stats_of(p);
  GptqOptions o;
  o.spec = QuantSpec{3, 64, false};
  o.act_order = true;
  auto r = gptq_quantize(p.w.data(), p.n, p.k, s.hessian(), o, "m");
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  for (float v : dequantize_linear(r->q)) ASSERT_TRUE(std::isfinite(v));
  EXPECT_LE(rel_error(p, r->q, s), rel_error(p, rtn_quantize(p.w.data(), p.n, p.k, o.spec), s));
}

TEST(Gptq, AllZeroHessianAndNanInputs) {
  Problem p = make_problem(8, 64, 4, 10);
  GptqOptions o;
  o.spec = QuantSpec{4, 32, false};
  auto zero = gptq_quantize(p.w.data(), p.n, p.k, std::vector<float>(64 * 64, 0.f), o, "m");
  ASSERT_TRUE(zero.is_ok()) << zero.status().message();
  EXPECT_EQ(zero->stats.dead_columns, 64);
  std::vector<float> nan_h(64 * 64, 0.f);
  for (int i = 0; i < 64; ++i) nan_h[i * 64 + i] = 1.f;
  nan_h[3 * 64 + 3] = NAN;
  auto bad = gptq_quantize(p.w.data(), p.n, p.k, nan_h, o, "model.layers.2.self_attn.o_proj");
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("o_proj"), std::string::npos) << bad.status().message();
}

TEST(Gptq, GroupNotDividingTheInputWidthIsAnError) {
  Problem p = make_problem(8, 96, 4, 11);
  InputStats s = stats_of(p);
  GptqOptions o;
  o.spec = QuantSpec{4, 64, false};
  auto r = gptq_quantize(p.w.data(), p.n, p.k, s.hessian(), o, "model.layers.0.mlp.down_proj");
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("does not divide"), std::string::npos);
}

}  // namespace
}  // namespace compactor
