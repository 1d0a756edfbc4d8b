// CPU backend ops against their scalar references (ops_ref.h), and the references themselves
// against hand-computed cases so the spec is pinned. Random data with fixed seeds; odd sizes,
// GQA ratios 1/2/3, batches with different n_past, f32/f16/bf16 weights and caches.
// Run: build/tests/test_cpu_ops (or ctest -L kernels).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/cpu_matmul.h"
#include "backend/cpu/ops_ref.h"
#include "support/compare.h"

namespace compactor {
namespace {

// Tolerances: ‖fast − ref‖ / ‖ref‖ (the reference accumulates in double, the fast ops in f32).
constexpr double kElementwiseTol = 1e-6;  // rms_norm, add, swiglu, rope, embedding
constexpr double kMatmulTol = 1e-5;       // f32 accumulation over K (GEMV or sgemm)
constexpr double kAttentionTol = 1e-5;    // online softmax in f32
constexpr double kNllTol = 1e-5;          // per-row log-sum-exp in f32 max + double sum

Tensor random_tensor(Shape shape, DType dtype, uint32_t seed, float scale = 1.f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> values(shape.numel());
  for (float& v : values) v = dist(rng);
  Tensor t = Tensor::empty(shape, dtype);
  convert_from_f32(values.data(), t.numel(), dtype, t.data());
  return t;
}

std::vector<float> values_of(View v) {
  std::vector<float> out(v.numel());
  convert_to_f32(v.data, v.dtype, v.numel(), out.data());
  return out;
}

Tensor clone(View v) {
  Tensor t = Tensor::empty(v.shape, v.dtype);
  std::memcpy(t.data(), v.data, v.bytes());
  return t;
}

void expect_close(View got, View want, double tol, const std::string& what) {
  ASSERT_EQ(got.numel(), want.numel()) << what;
  const std::vector<float> g = values_of(got), w = values_of(want);
  for (float x : g) ASSERT_TRUE(std::isfinite(x)) << what;
  EXPECT_LE(test::rel_l2_error(g, w), tol) << what;
}

const DType kFloatTypes[] = {DType::kF32, DType::kF16, DType::kBF16};

// ---- the references pinned by hand-computed values ----

TEST(CpuOpsReference, MatmulSmallCase) {
  float x[] = {1, 2}, w[] = {1, 0, 0, 1, 1, 1}, bias[] = {0.5f, 0, -1}, y[3];
  LinearWeight lw{Format::kF32, 3, 2, View{w, Shape{3, 2}}, View{bias, Shape{3}}};
  matmul_ref(View{y, Shape{1, 3}}, View{x, Shape{1, 2}}, lw);
  EXPECT_FLOAT_EQ(y[0], 1.5f);
  EXPECT_FLOAT_EQ(y[1], 2.f);
  EXPECT_FLOAT_EQ(y[2], 2.f);
}

TEST(CpuOpsReference, RmsNormSmallCase) {
  float x[] = {3, 4}, w[] = {1, 2}, y[2];
  rms_norm_ref(View{y, Shape{1, 2}}, View{x, Shape{1, 2}}, View{w, Shape{2}}, 0.f);
  const float rms = std::sqrt(12.5f);
  EXPECT_FLOAT_EQ(y[0], 3 / rms);
  EXPECT_FLOAT_EQ(y[1], 8 / rms);
}

TEST(CpuOpsReference, RopeIdentityAtZeroAndRotationElsewhere) {
  float x[] = {1, 2, 3, 4, 1, 0, 0, 0};  // two rows (B=2, T=1) of one head, Dh=4
  const float inv_freq[] = {1.f, 0.5f};
  const int32_t past[] = {0, 3};
  rope_ref(View{x, Shape{2, 4}}, 1, 4, inv_freq, BatchLayout{2, 1, past});
  EXPECT_FLOAT_EQ(x[0], 1);
  EXPECT_FLOAT_EQ(x[1], 2);
  EXPECT_FLOAT_EQ(x[2], 3);
  EXPECT_FLOAT_EQ(x[3], 4);
  // Position 3: pair (x[0], x[2]) = (1, 0) rotates by 3 rad; pair (x[1], x[3]) = (0, 0) stays.
  EXPECT_NEAR(x[4], std::cos(3.f), 1e-6);
  EXPECT_NEAR(x[6], std::sin(3.f), 1e-6);
  EXPECT_EQ(x[5], 0.f);
  EXPECT_EQ(x[7], 0.f);
}

TEST(CpuOpsReference, AttentionWithOneKeyReturnsItsValue) {
  // H=2, Hkv=1, Dh=2, one token at position 0: both heads return v[0].
  float q[] = {1, -2, 3, 0.5f}, k[] = {0.3f, 0.7f}, v[] = {5, -6}, out[4];
  AttentionParams p{2, 1, 2, 0.7f};
  attention_ref(View{out, Shape{1, 4}}, View{q, Shape{1, 4}}, View{k, Shape{1, 1, 2}}, View{v, Shape{1, 1, 2}}, p,
                BatchLayout{1, 1, nullptr});
  EXPECT_FLOAT_EQ(out[0], 5);
  EXPECT_FLOAT_EQ(out[1], -6);
  EXPECT_FLOAT_EQ(out[2], 5);
  EXPECT_FLOAT_EQ(out[3], -6);
}

TEST(CpuOpsReference, AttentionIsCausalAndAveragesEqualScores) {
  // H=Hkv=1, Dh=1, T=2: query 0 sees key 0 only; query 1 has equal scores on both keys.
  float q[] = {1, 0}, k[] = {2, 3}, v[] = {10, 20}, out[2];
  AttentionParams p{1, 1, 1, 1.f};
  attention_ref(View{out, Shape{2, 1}}, View{q, Shape{2, 1}}, View{k, Shape{1, 2, 1}}, View{v, Shape{1, 2, 1}}, p,
                BatchLayout{1, 2, nullptr});
  EXPECT_FLOAT_EQ(out[0], 10);
  EXPECT_FLOAT_EQ(out[1], 15);
}

TEST(CpuOpsReference, CrossEntropyOfUniformLogitsIsLogV) {
  std::vector<float> logits(2 * 50, 3.25f);
  logits[50 + 7] = 1000.f;  // row 1: a certain prediction of token 7
  const int32_t targets[] = {11, 7};
  float nll[2];
  cross_entropy_ref(nll, View{logits.data(), Shape{2, 50}}, targets);
  EXPECT_NEAR(nll[0], std::log(50.0), 1e-6);
  EXPECT_NEAR(nll[1], 0.0, 1e-6);
}

TEST(CpuOpsReference, SwigluEmbeddingAndKvStoreSmallCases) {
  float g[] = {0, 20, -1}, u[] = {3, 2, 1}, out[3];
  swiglu_ref(View{out, Shape{1, 3}}, View{g, Shape{1, 3}}, View{u, Shape{1, 3}});
  EXPECT_EQ(out[0], 0.f);
  EXPECT_NEAR(out[1], 40.f, 1e-5);
  EXPECT_NEAR(out[2], -1.f / (1.f + std::exp(1.f)), 1e-7);

  float table[] = {1, 2, 3, 4, 5, 6}, emb[4];
  const int32_t ids[] = {2, 0};
  embedding_ref(View{emb, Shape{2, 2}}, ids, View{table, Shape{3, 2}});
  EXPECT_EQ(std::vector<float>(emb, emb + 4), (std::vector<float>{5, 6, 1, 2}));

  float kc[2 * 3] = {}, vc[2 * 3] = {}, kv[] = {7, 8};  // B=2, S_max=3, width 1, T=1
  const int32_t past[] = {2, 1};
  kv_store_ref(View{kc, Shape{2, 3, 1}}, View{vc, Shape{2, 3, 1}}, View{kv, Shape{2, 1}}, View{kv, Shape{2, 1}},
               BatchLayout{2, 1, past});
  EXPECT_EQ(std::vector<float>(kc, kc + 6), (std::vector<float>{0, 0, 7, 0, 8, 0}));
}

// ---- fast CPU ops against the references ----

struct MatmulCase {
  int64_t k, n;
};

LinearWeight make_weight(DType dtype, int64_t n, int64_t k, bool with_bias, uint32_t seed, Tensor& w, Tensor& b) {
  Format f = Format::kF32;
  format_from_dtype(dtype, &f);
  w = random_tensor(Shape{n, k}, dtype, seed, 1.f / std::sqrt(float(k)));
  LinearWeight lw{f, n, k, w.view(), View{}};
  if (with_bias) {
    b = random_tensor(Shape{n}, DType::kF32, seed + 1);
    lw.bias = b.view();
  }
  return lw;
}

TEST(CpuOps, MatmulBothPathsMatchReference) {
  const MatmulCase cases[] = {{173, 37}, {64, 128}, {384, 130}};
  uint32_t seed = 1;
  for (auto [k, n] : cases) {
    for (DType dtype : kFloatTypes) {
      for (bool with_bias : {false, true}) {
        for (int64_t rows : {1, 2, 7, 8, 64}) {
          Tensor w, b;
          const LinearWeight lw = make_weight(dtype, n, k, with_bias, seed++, w, b);
          Tensor x = random_tensor(Shape{rows, k}, DType::kF32, seed++);
          Tensor want = Tensor::empty(Shape{rows, n}, DType::kF32), got = Tensor::empty(Shape{rows, n}, DType::kF32);
          matmul_ref(want, x, lw);
          const std::string what = fmt::format("K={} N={} T={} {} bias={}", k, n, rows, dtype_name(dtype), with_bias);
          matmul_gemv_cpu(got, x, lw);
          expect_close(got, want, kMatmulTol, "gemv " + what);
          matmul_gemm_cpu(got, x, lw);
          expect_close(got, want, kMatmulTol, "gemm " + what);
          CpuBackend().matmul(got, x, lw);
          expect_close(got, want, kMatmulTol, "backend " + what);
        }
      }
    }
  }
}

TEST(CpuOps, RmsNormAndAddRmsNormMatchReference) {
  CpuBackend be;
  for (int64_t d : {1, 37, 384}) {
    for (DType wtype : kFloatTypes) {
      Tensor x = random_tensor(Shape{5, d}, DType::kF32, 10 + d, 3.f);
      Tensor delta = random_tensor(Shape{5, d}, DType::kF32, 11 + d);
      Tensor w = random_tensor(Shape{d}, wtype, 12 + d);
      Tensor want = Tensor::empty(x.shape(), DType::kF32), got = Tensor::empty(x.shape(), DType::kF32);
      rms_norm_ref(want, x, w, 1e-5f);
      be.rms_norm(got, x, w, 1e-5f);
      expect_close(got, want, kElementwiseTol, fmt::format("rms_norm D={} w {}", d, dtype_name(wtype)));

      Tensor res_want = clone(x), res_got = clone(x);
      add_rms_norm_ref(want, res_want, delta, w, 1e-6f);
      be.add_rms_norm(got, res_got, delta, w, 1e-6f);
      expect_close(res_got, res_want, kElementwiseTol, fmt::format("add_rms_norm residual D={}", d));
      expect_close(got, want, kElementwiseTol, fmt::format("add_rms_norm out D={} w {}", d, dtype_name(wtype)));
    }
  }
}

TEST(CpuOps, AddSwigluEmbeddingMatchReference) {
  CpuBackend be;
  const Shape shape{7, 173};
  Tensor g = random_tensor(shape, DType::kF32, 20, 6.f), u = random_tensor(shape, DType::kF32, 21);
  Tensor want = Tensor::empty(shape, DType::kF32), got = Tensor::empty(shape, DType::kF32);
  swiglu_ref(want, g, u);
  be.swiglu(got, g, u);
  expect_close(got, want, kElementwiseTol, "swiglu");

  Tensor a_want = clone(g), a_got = clone(g);
  add_ref(a_want, u);
  be.add(a_got, u);
  expect_close(a_got, a_want, 0.0, "add");

  const int32_t ids[] = {4, 0, 9, 4, 2};
  for (DType dtype : kFloatTypes) {
    Tensor table = random_tensor(Shape{10, 37}, dtype, 22);
    Tensor e_want = Tensor::empty(Shape{5, 37}, DType::kF32), e_got = Tensor::empty(Shape{5, 37}, DType::kF32);
    embedding_ref(e_want, ids, table);
    be.embedding(e_got, ids, table);
    expect_close(e_got, e_want, 0.0, fmt::format("embedding {}", dtype_name(dtype)));
  }
}

std::vector<float> llama_inv_freq(int head_dim, float theta) {
  std::vector<float> f(head_dim / 2);
  for (int i = 0; i < head_dim / 2; ++i) f[i] = 1.f / std::pow(theta, 2.f * i / head_dim);
  return f;
}

TEST(CpuOps, RopeMatchesReferenceAcrossBatches) {
  CpuBackend be;
  const int32_t past[] = {0, 17, 1000};
  for (int batch : {1, 2, 3}) {
    for (int tokens : {1, 7}) {
      for (int head_dim : {8, 64}) {
        const int heads = 3;
        const std::vector<float> inv_freq = llama_inv_freq(head_dim, 10000.f);
        const BatchLayout layout{batch, tokens, past};
        Tensor want = random_tensor(Shape{int64_t{batch} * tokens, heads * head_dim}, DType::kF32, batch * 7 + tokens);
        Tensor got = clone(want);
        rope_ref(want, heads, head_dim, inv_freq.data(), layout);
        be.rope(got, heads, head_dim, inv_freq.data(), layout);
        expect_close(got, want, kElementwiseTol, fmt::format("rope B={} T={} Dh={}", batch, tokens, head_dim));
      }
    }
  }
}

struct AttentionCase {
  int heads, kv_heads, head_dim, batch, tokens;
};

TEST(CpuOps, KvStoreAndAttentionMatchReference) {
  CpuBackend be;
  const AttentionCase cases[] = {{2, 2, 8, 1, 1},  {4, 2, 16, 2, 7},  {6, 2, 64, 3, 1},
                                 {3, 1, 32, 3, 20}, {6, 2, 64, 1, 64}, {4, 4, 8, 2, 2}};
  const int32_t past[] = {0, 70, 5};  // crosses the 64-key tile of the fast kernel
  const int64_t s_max = 150;
  uint32_t seed = 100;
  for (const AttentionCase& c : cases) {
    for (DType cache_type : kFloatTypes) {
      const BatchLayout layout{c.batch, c.tokens, past};
      const int64_t rows = int64_t{c.batch} * c.tokens, kv_width = int64_t{c.kv_heads} * c.head_dim;
      // Random data everywhere in the caches, so a key read past the causal limit changes the result.
      Tensor k_cache = random_tensor(Shape{c.batch, s_max, kv_width}, cache_type, seed++);
      Tensor v_cache = random_tensor(Shape{c.batch, s_max, kv_width}, cache_type, seed++);
      Tensor k = random_tensor(Shape{rows, kv_width}, DType::kF32, seed++);
      Tensor v = random_tensor(Shape{rows, kv_width}, DType::kF32, seed++);
      Tensor q = random_tensor(Shape{rows, int64_t{c.heads} * c.head_dim}, DType::kF32, seed++, 2.f);
      const std::string what = fmt::format("H={} Hkv={} Dh={} B={} T={} cache {}", c.heads, c.kv_heads, c.head_dim,
                                           c.batch, c.tokens, dtype_name(cache_type));

      Tensor k_want = clone(k_cache), v_want = clone(v_cache);
      kv_store_ref(k_want, v_want, k, v, layout);
      be.kv_store(k_cache, v_cache, k, v, layout);
      expect_close(k_cache, k_want, 0.0, "kv_store k " + what);
      expect_close(v_cache, v_want, 0.0, "kv_store v " + what);

      const AttentionParams p{c.heads, c.kv_heads, c.head_dim, 1.f / std::sqrt(float(c.head_dim))};
      Tensor want = Tensor::empty(q.shape(), DType::kF32), got = Tensor::empty(q.shape(), DType::kF32);
      attention_ref(want, q, k_cache, v_cache, p, layout);
      be.attention(got, q, k_cache, v_cache, p, layout);
      expect_close(got, want, kAttentionTol, "attention " + what);
    }
  }
}

TEST(CpuOps, CrossEntropyMatchesReferenceAndIsStable) {
  CpuBackend be;
  for (float offset : {0.f, 1000.f, -1000.f}) {
    Tensor logits = random_tensor(Shape{9, 1001}, DType::kF32, 7, 8.f);
    for (int64_t i = 0; i < logits.numel(); ++i) logits.as<float>()[i] += offset;
    std::vector<int32_t> targets(9);
    std::iota(targets.begin(), targets.end(), 990);
    std::vector<float> want(9), got(9);
    cross_entropy_ref(want.data(), logits, targets.data());
    be.cross_entropy(got.data(), logits, targets.data());
    for (float x : got) ASSERT_TRUE(std::isfinite(x)) << "offset " << offset;
    EXPECT_LE(test::rel_l2_error(got, want), kNllTol) << "offset " << offset;
  }
}

TEST(CpuOps, MemoryOps) {
  CpuBackend be;
  Tensor t = be.alloc(Shape{3, 5}, DType::kBF16);
  EXPECT_EQ(t.bytes(), 30);
  std::vector<uint16_t> in(15), out(15);
  std::iota(in.begin(), in.end(), 1);
  be.copy_from_host(in.data(), t);
  be.copy_to_host(t, out.data());
  EXPECT_EQ(in, out);
  Tensor u = be.alloc(Shape{3, 5}, DType::kBF16);
  be.copy(u, t);
  EXPECT_EQ(std::memcmp(u.data(), t.data(), t.bytes()), 0);
}

TEST(CpuOpsDeathTest, ShapeMismatchNamesTheShapes) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  Tensor x = Tensor::zeros(Shape{2, 5}, DType::kF32), w = Tensor::zeros(Shape{4, 6}, DType::kF32);
  Tensor out = Tensor::zeros(Shape{2, 4}, DType::kF32);
  LinearWeight lw{Format::kF32, 4, 6, w.view(), View{}};
  EXPECT_DEATH(CpuBackend().matmul(out, x, lw), "matmul: out \\[2, 4\\] = x \\[2, 5\\]");
  EXPECT_DEATH(CpuBackend().add(out, x), "add: shapes \\[2, 4\\] and \\[2, 5\\] differ");
}

}  // namespace
}  // namespace compactor
