// The benchmark's arithmetic and the synthetic model shapes, on any machine (no GPU needed):
// synthetic configs match the public checkpoints' parameter counts, the memory estimate names
// the point that does not fit, prefill FLOPs and decode bytes follow their formulas, and a tiny
// synthetic model filled on the host runs a CPU forward with finite logits.
// Run: build-*/tests/test_bench_plan
#include <gtest/gtest.h>

#include <cmath>

#include "backend/backend.h"
#include "bench/bench.h"
#include "bench/memory_plan.h"
#include "model/synthetic.h"

namespace compactor {
namespace {

// Parameter counts of the checkpoints (HF model cards / safetensors metadata).
TEST(SyntheticConfig, ShapesMatchThePublicCheckpoints) {
  struct Case { const char* name; int64_t params; int64_t kv_heads; };
  for (const Case& c : {Case{"llama2-7b", 6738415616, 32}, Case{"llama3-8b", 8030261248, 8},
                        Case{"mistral-7b", 7241732096, 8}, Case{"llama2-13b", 13015864320, 40}}) {
    auto cfg = synthetic_config(c.name);
    ASSERT_TRUE(cfg.is_ok()) << cfg.status().message();
    EXPECT_EQ(cfg->num_kv_heads, c.kv_heads) << c.name;
    EXPECT_EQ(cfg->head_dim, 128) << c.name;
    const int64_t bytes = estimate_weight_bytes(*cfg, 2);
    const int64_t norms = (2 * cfg->num_layers + 1) * cfg->hidden_size;
    EXPECT_EQ((bytes - norms * 4) / 2 + norms, c.params) << c.name;
  }
  EXPECT_FALSE(synthetic_config("llama9-1t").is_ok());
}

TEST(MemoryPlan, KvCacheFormulaAndClearError) {
  auto cfg = synthetic_config("llama2-7b");
  ASSERT_TRUE(cfg.is_ok());
  const int64_t w = estimate_weight_bytes(*cfg, 2);
  const MemoryEstimate e = estimate_memory(*cfg, w, 2, 32, 512, 640);
  EXPECT_EQ(e.kv_cache, int64_t{32} * 640 * 32 * 2 * 4096 * 2);  // B × ctx × L × 2 × Hkv·Dh × 2 bytes
  EXPECT_GT(e.activations, 0);
  EXPECT_TRUE(check_memory_fits(e, w, int64_t{80} << 30, "batch 32").is_ok());
  const Status st = check_memory_fits(e, w, int64_t{8} << 30, "batch 32, context 640");
  EXPECT_EQ(st.code(), StatusCode::kOutOfMemory);
  EXPECT_NE(st.message().find("batch 32, context 640"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("KV cache"), std::string::npos) << st.message();
}

TEST(BenchMath, PrefillFlopsAndDecodeBytes) {
  auto cfg = synthetic_config("llama2-7b");
  ASSERT_TRUE(cfg.is_ok());
  // Issue #3: 2048 tokens of Llama-2-7B are ~28 TFLOP.
  const double f = prefill_flops(*cfg, 1, 2048);
  EXPECT_NEAR(f / 1e12, 27.7, 0.3);
  // Attention part alone: L·H·4·Dh·T(T+1)/2.
  const double attn = 32.0 * 32 * 4 * 128 * 2048.0 * 2049 / 2;
  EXPECT_NEAR(f - prefill_flops(*cfg, 1, 2048, 0) + attn, attn, 1.0);
  const int64_t w = estimate_weight_bytes(*cfg, 2);
  const double b1 = decode_step_bytes(*cfg, w, 2, 1, 0.0);
  EXPECT_NEAR(b1, double(w) - 32000.0 * 4096 * 2 + 4096 * 2, 1.0);  // the embedding table is not read
  const double kv = decode_step_bytes(*cfg, w, 2, 8, 576.0) - decode_step_bytes(*cfg, w, 2, 8, 0.0);
  EXPECT_NEAR(kv, 8.0 * 576 * 32 * 2 * 4096 * 2, 1.0);
}

TEST(SyntheticModel, TinyCpuForwardIsFinite) {
  auto be = make_backend(BackendKind::kCpu);
  ASSERT_TRUE(be.is_ok());
  auto cfg = synthetic_config("tiny");
  ASSERT_TRUE(cfg.is_ok());
  auto model = Model::allocate(*cfg, **be);
  ASSERT_TRUE(model.is_ok()) << model.status().message();
  Backend& backend = **be;
  fill_synthetic_weights(**model, 1, [&](View v, uint64_t stream, float mean, float stddev) {
    fill_normal_host(backend, v, stream, mean, stddev);
  });
  EXPECT_EQ(model_weight_bytes(**model), estimate_weight_bytes(*cfg, 4));
  EXPECT_EQ((*model)->parameter_count() * 4, model_weight_bytes(**model));
  KvCache cache = (*model)->make_kv_cache(1, 16);
  std::vector<int32_t> ids = {1, 5, 9, 200, 7};
  auto logits = (*model)->forward({ids.data(), BatchLayout{1, 5}, LogitsMode::kAll}, cache);
  ASSERT_TRUE(logits.is_ok()) << logits.status().message();
  const float* l = logits->as<float>();
  double sq = 0;
  for (int64_t i = 0; i < logits->numel(); ++i) {
    ASSERT_TRUE(std::isfinite(l[i])) << i;
    sq += double(l[i]) * l[i];
  }
  const double rms = std::sqrt(sq / logits->numel());
  EXPECT_GT(rms, 0.05);
  EXPECT_LT(rms, 50.0);
  std::printf("  tiny synthetic logits rms %.3f\n", rms);
}

TEST(SyntheticModel, HostDrawIsNormal) {
  auto be = make_backend(BackendKind::kCpu);
  ASSERT_TRUE(be.is_ok());
  Tensor t = Tensor::empty(Shape{200000}, DType::kF32);
  fill_normal_host(**be, t, 9, 1.f, 0.5f);
  double mean = 0, var = 0;
  const float* v = t.as<float>();
  for (int64_t i = 0; i < t.numel(); ++i) mean += v[i] / t.numel();
  for (int64_t i = 0; i < t.numel(); ++i) var += (v[i] - mean) * (v[i] - mean) / t.numel();
  EXPECT_NEAR(mean, 1.0, 0.01);
  EXPECT_NEAR(std::sqrt(var), 0.5, 0.01);
}

}  // namespace
}  // namespace compactor
