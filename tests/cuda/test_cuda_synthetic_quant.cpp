// Synthetic quantized models on the GPU (bench --quant; model/synthetic.h): the device word fill
// equals the host one bit for bit; a tiny model made packed on the GPU gives the same logits as the
// same packed tensors copied to the CPU backend (prefill through the fused GEMV and through the
// dequantize + cuBLAS path, and a decode step), for every width, act-order, sym and a packed
// lm_head; the CUDA bench runs it with graphs and reports packed bytes; the memory plan of the
// 7B shapes counts packed bytes. Skips (GTEST_SKIP) the device parts only when no GPU is present.
// Run: build-*/tests/test_cuda_synthetic_quant (on a GPU machine)
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>

#include <cmath>
#include <cstring>
#include <cstdio>
#include <string>
#include <vector>

#include "cuda/cuda_test_util.h"
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/fill_words.h"
#include "bench/bench.h"
#include "bench/cuda_decode.h"
#include "bench/memory_plan.h"
#include "model/synthetic.h"
#include "support/compare.h"

namespace compactor {
namespace {

using test::gpu_present;

SyntheticQuant quant_of(const std::string& preset, bool sym, bool act_order, bool lm_head) {
  auto q = synthetic_quant(preset, sym, act_order, lm_head);
  EXPECT_TRUE(q.is_ok()) << q.status().message();
  return q.is_ok() ? *q : SyntheticQuant{};
}

// A tiny synthetic model on the GPU, filled by the device fills.
std::unique_ptr<Model> make_gpu_model(CudaBackend& be, const SyntheticQuant* quant, uint64_t seed) {
  auto cfg = synthetic_config("tiny");
  EXPECT_TRUE(cfg.is_ok());
  Status fill_status;
  auto m = make_synthetic_model(
      *cfg, be, quant, seed,
      [&](View v, uint64_t s, float mean, float sd) {
        if (fill_status.is_ok()) fill_status = be.fill_normal(v, s, mean, sd);
      },
      [&](View v, uint64_t s) {
        if (fill_status.is_ok()) fill_status = fill_random_words_cuda(v, s, be.stream());
      });
  EXPECT_TRUE(m.is_ok()) << m.status().message();
  EXPECT_TRUE(fill_status.is_ok()) << fill_status.message();
  be.synchronize();
  return m.is_ok() ? std::move(m).value() : nullptr;
}

// The CPU twin: same shapes and formats, every tensor copied from the GPU model (dense ones
// widened to the CPU's f32, packed ones byte for byte).
std::unique_ptr<Model> copy_to_cpu(Model& gpu, Backend& cpu, const SyntheticQuant* quant) {
  auto m = make_synthetic_model(
      gpu.config(), cpu, quant, 0, [&](View v, uint64_t s, float mean, float sd) { fill_normal_host(cpu, v, s, mean, sd); },
      [&](View v, uint64_t s) { fill_words_host(cpu, v, s); });
  EXPECT_TRUE(m.is_ok()) << m.status().message();
  if (!m.is_ok()) return nullptr;
  Model& c = **m;
  Backend& g = gpu.backend();
  auto dense = [&](View src, View dst) {
    ASSERT_EQ(src.numel(), dst.numel());
    ASSERT_EQ(dst.dtype, DType::kF32);
    copy_to_host_f32(g, src, dst.as<float>());
  };
  auto raw = [&](View src, View dst) {
    ASSERT_EQ(src.data == nullptr, dst.data == nullptr);
    if (src.data == nullptr) return;
    ASSERT_EQ(src.bytes(), dst.bytes());
    ASSERT_EQ(src.dtype, dst.dtype);
    g.copy_to_host(src, dst.data);
  };
  auto linear = [&](const LinearWeight& src, const LinearWeight& dst) {
    ASSERT_EQ(src.quantized(), dst.quantized());
    if (src.quantized()) {
      ASSERT_EQ(src.format, dst.format);
      ASSERT_EQ(src.group_size, dst.group_size);
      raw(src.qweight, dst.qweight);
      raw(src.scales, dst.scales);
      raw(src.qzeros, dst.qzeros);
      raw(src.g_idx, dst.g_idx);
    } else {
      dense(src.weight, dst.weight);
    }
  };
  const ModelWeights& gw = gpu.weights();
  ModelWeights& cw = c.mutable_weights();
  dense(gw.embed, cw.embed);
  dense(gw.final_norm, cw.final_norm);
  linear(gw.lm_head, cw.lm_head);
  for (size_t l = 0; l < gw.layers.size(); ++l) {
    const LayerWeights& a = gw.layers[l];
    LayerWeights& b = cw.layers[l];
    dense(a.attn_norm, b.attn_norm);
    dense(a.mlp_norm, b.mlp_norm);
    const LinearWeight* src[] = {&a.q, &a.k, &a.v, &a.o, &a.gate, &a.up, &a.down};
    const LinearWeight* dst[] = {&b.q, &b.k, &b.v, &b.o, &b.gate, &b.up, &b.down};
    for (int i = 0; i < 7; ++i) linear(*src[i], *dst[i]);
  }
  return std::move(m).value();
}

std::vector<float> logits_of(Model& m, KvCache& cache, const std::vector<int32_t>& ids, int batch, int tokens) {
  auto out = m.forward({ids.data(), BatchLayout{batch, tokens}, LogitsMode::kAll}, cache);
  EXPECT_TRUE(out.is_ok()) << out.status().message();
  if (!out.is_ok()) return {};
  std::vector<float> host(out->numel());
  copy_to_host_f32(m.backend(), *out, host.data());
  return host;
}

std::vector<int32_t> ids_of(int n, int vocab, int salt) {
  std::vector<int32_t> ids(n);
  for (int i = 0; i < n; ++i) ids[i] = static_cast<int32_t>((i * 37 + salt * 101 + 5) % vocab);
  return ids;
}

TEST(CudaSyntheticQuant, DeviceWordFillMatchesHost) {
  if (!gpu_present()) GTEST_SKIP() << "no CUDA GPU on this machine";
  auto be = CudaBackend::create();
  ASSERT_TRUE(be.is_ok()) << be.status().message();
  auto cpu = make_backend(BackendKind::kCpu);
  ASSERT_TRUE(cpu.is_ok());
  const int64_t n = 100003;
  Tensor dev = (*be)->alloc(Shape{n}, DType::kI32);
  Tensor host = (*cpu)->alloc(Shape{n}, DType::kI32);
  ASSERT_TRUE(fill_random_words_cuda(dev, 42, (*be)->stream()).is_ok());
  fill_words_host(**cpu, host, 42);
  std::vector<uint32_t> got(n);
  (*be)->copy_to_host(dev, got.data());
  const uint32_t* want = host.as<const uint32_t>();
  int64_t mismatches = 0, first = -1, ones = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (got[i] != want[i] && mismatches++ == 0) first = i;
    ones += __builtin_popcount(got[i]);
  }
  EXPECT_EQ(mismatches, 0) << "first at word " << first << ": device " << got[first] << " host " << want[first];
  const double bit_mean = static_cast<double>(ones) / (32.0 * n);
  EXPECT_NEAR(bit_mean, 0.5, 0.01) << "random words should have balanced bits";
  EXPECT_FALSE(fill_random_words_cuda((*cpu)->alloc(Shape{4}, DType::kI32), 1, (*be)->stream()).is_ok());
  EXPECT_FALSE(fill_random_words_cuda((*be)->alloc(Shape{4}, DType::kBF16), 1, (*be)->stream()).is_ok());
}

struct Case {
  const char* preset;
  bool sym, act_order, lm_head;
  DType act;
};

class CudaSyntheticQuantModel : public ::testing::TestWithParam<Case> {};

TEST_P(CudaSyntheticQuantModel, MatchesCpuOnTheSamePackedWeights) {
  if (!gpu_present()) GTEST_SKIP() << "no CUDA GPU on this machine";
  const Case c = GetParam();
  CudaBackendOptions opts;
  opts.activation_dtype = c.act;
  auto be = CudaBackend::create(opts);
  ASSERT_TRUE(be.is_ok()) << be.status().message();
  auto cpu = make_backend(BackendKind::kCpu);
  ASSERT_TRUE(cpu.is_ok());
  const SyntheticQuant q = quant_of(c.preset, c.sym, c.act_order, c.lm_head);
  const std::string name = fmt::format("{} {}", q.format_label(), dtype_name(c.act)) + (c.lm_head ? " +lm_head" : "");
  const int64_t before = (*be)->memory_info().allocated_bytes;
  auto gpu = make_gpu_model(**be, &q, 11);
  ASSERT_NE(gpu, nullptr);
  const int64_t placed = (*be)->memory_info().allocated_bytes - before;
  // What the memory plan predicts is what was placed (bf16/f16 dense tensors: 2 bytes).
  EXPECT_EQ(model_weight_bytes(*gpu), estimate_quantized_weight_bytes(gpu->config(), q.spec, c.act_order, c.lm_head, 2))
      << name;
  EXPECT_GE(placed, model_weight_bytes(*gpu)) << name;
  EXPECT_EQ(gpu->weights().lm_head.quantized(), c.lm_head) << name;
  auto twin = copy_to_cpu(*gpu, **cpu, &q);
  ASSERT_NE(twin, nullptr);
  const int vocab = static_cast<int>(gpu->config().vocab_size);
  const double tol = c.act == DType::kBF16 ? 5e-2 : 1e-2;

  // B=2 x T=7 (14 rows: the fused GEMV path), then one decode step (2 rows), then B=2 x T=40
  // (80 rows: dequantize + cuBLAS) in a fresh cache.
  KvCache gc = gpu->make_kv_cache(2, 48), cc = twin->make_kv_cache(2, 48);
  const std::vector<int32_t> short_ids = ids_of(14, vocab, 1), step_ids = ids_of(2, vocab, 2);
  const std::vector<int32_t> long_ids = ids_of(80, vocab, 3);
  struct Phase {
    const char* what;
    const std::vector<int32_t>* ids;
    int tokens;
    bool fresh;
  };
  for (const Phase& p : {Phase{"prefill 2x7 (fused GEMV)", &short_ids, 7, true},
                         Phase{"decode step 2x1 (fused GEMV)", &step_ids, 1, false},
                         Phase{"prefill 2x40 (dequantize + cuBLAS)", &long_ids, 40, true}}) {
    if (p.fresh) {
      gc.reset();
      cc.reset();
    }
    const std::vector<float> got = logits_of(*gpu, gc, *p.ids, 2, p.tokens);
    const std::vector<float> want = logits_of(*twin, cc, *p.ids, 2, p.tokens);
    ASSERT_EQ(got.size(), want.size()) << name << " " << p.what;
    ASSERT_FALSE(want.empty());
    int64_t nonfinite = 0;
    double sq = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      if (!std::isfinite(got[i])) ++nonfinite;
      sq += double(want[i]) * want[i];
    }
    const double err = test::rel_l2_error(got, want);
    std::printf("  %-36s %-34s logits rms %.3f, rel err gpu vs cpu %.3e (tol %.0e)\n", name.c_str(), p.what,
                std::sqrt(sq / want.size()), err, tol);
    EXPECT_EQ(nonfinite, 0) << name << " " << p.what;
    EXPECT_LE(err, tol) << name << " " << p.what;
  }
  const int64_t runtime_estimate = quantized_runtime_bytes(*gpu, dtype_size(c.act));
  std::printf("  %-36s device bytes: weights %lld (plan %lld), after forwards +%lld (runtime plan %lld + activations)\n",
              name.c_str(), static_cast<long long>(placed), static_cast<long long>(model_weight_bytes(*gpu)),
              static_cast<long long>((*be)->memory_info().allocated_bytes - before - placed),
              static_cast<long long>(runtime_estimate));
}

INSTANTIATE_TEST_SUITE_P(Formats, CudaSyntheticQuantModel,
                         ::testing::Values(Case{"w4g128", false, false, false, DType::kBF16},
                                           Case{"w4g128", false, false, false, DType::kF16},
                                           Case{"w4g32", false, false, false, DType::kBF16},
                                           Case{"w4", false, false, false, DType::kBF16},
                                           Case{"w8", false, false, false, DType::kBF16},
                                           Case{"w8g128", true, false, true, DType::kBF16},
                                           Case{"w3g128", false, false, false, DType::kBF16},
                                           Case{"w2g64", false, false, false, DType::kBF16},
                                           Case{"w2g16", false, false, false, DType::kBF16},
                                           Case{"w4g128", true, false, false, DType::kBF16},
                                           Case{"w4g128", false, true, false, DType::kBF16},
                                           Case{"w3g64", false, true, true, DType::kBF16}),
                         [](const auto& info) {
                           const Case& c = info.param;
                           std::string n = std::string(c.preset) + (c.sym ? "_sym" : "") + (c.act_order ? "_actorder" : "") +
                                           (c.lm_head ? "_lmhead" : "") + "_" + std::string(dtype_name(c.act));
                           return n;
                         });

// Programmatic dependent launches (launch.cuh) change only when kernels start, never what they
// compute: with them on and off the same model gives bit-identical logits (fused-GEMV prefill,
// eager decode steps, dequantize + cuBLAS prefill) and the same graph-replayed greedy tokens. A
// kernel touching its predecessor's output before griddepcontrol.wait would show up as a difference.
TEST(CudaSyntheticQuant, DependentLaunchesKeepResultsBitIdentical) {
  if (!gpu_present()) GTEST_SKIP() << "no CUDA GPU on this machine";
  const SyntheticQuant q = quant_of("w4g128", false, false, false);
  std::vector<std::vector<float>> logits;
  std::vector<std::vector<int32_t>> tokens;
  for (DependentLaunch mode : {DependentLaunch::kOn, DependentLaunch::kOff}) {
    CudaBackendOptions opts;
    opts.dependent_launch = mode;
    auto be = CudaBackend::create(opts);
    ASSERT_TRUE(be.is_ok()) << be.status().message();
    auto m = make_gpu_model(**be, &q, 7);
    ASSERT_NE(m, nullptr);
    const int vocab = static_cast<int>(m->config().vocab_size);
    KvCache cache = m->make_kv_cache(2, 64);
    std::vector<float> all = logits_of(*m, cache, ids_of(14, vocab, 1), 2, 7);
    for (int s = 0; s < 4; ++s) {
      const std::vector<float> step = logits_of(*m, cache, ids_of(2, vocab, 10 + s), 2, 1);
      all.insert(all.end(), step.begin(), step.end());
    }
    cache.reset();
    const std::vector<float> wide = logits_of(*m, cache, ids_of(80, vocab, 3), 2, 40);
    all.insert(all.end(), wide.begin(), wide.end());
    logits.push_back(std::move(all));

    const int steps = 8;
    KvCache loop_cache = m->make_kv_cache(1, 16 + steps);
    const std::vector<int32_t> prompt = ids_of(16, vocab, 4);
    auto last = m->forward({prompt.data(), BatchLayout{1, 16}, LogitsMode::kLast}, loop_cache);
    ASSERT_TRUE(last.is_ok()) << last.status().message();
    auto loop = CudaDecodeLoop::create(*m, **be, loop_cache, SampleParams{}, steps, GraphMode::kOn);
    ASSERT_TRUE(loop.is_ok()) << loop.status().message();
    ASSERT_TRUE((*loop)->start(*last).is_ok());
    EXPECT_TRUE((*loop)->uses_graph()) << "capture failed: " << (*loop)->graph_error();
    while ((*loop)->steps_taken() < steps) ASSERT_TRUE((*loop)->step().is_ok());
    auto ids = (*loop)->tokens();
    ASSERT_TRUE(ids.is_ok()) << ids.status().message();
    tokens.push_back(ids->at(0));
  }
  ASSERT_EQ(logits[0].size(), logits[1].size());
  ASSERT_FALSE(logits[0].empty());
  EXPECT_EQ(std::memcmp(logits[0].data(), logits[1].data(), logits[0].size() * sizeof(float)), 0)
      << "logits differ with dependent launches on and off";
  EXPECT_EQ(tokens[0], tokens[1]);
}

// The bench's CUDA path on a packed model: graph-replayed decode, packed bytes in the result.
TEST(CudaSyntheticQuant, BenchReportsPackedBytes) {
  if (!gpu_present()) GTEST_SKIP() << "no CUDA GPU on this machine";
  auto be = CudaBackend::create();
  ASSERT_TRUE(be.is_ok()) << be.status().message();
  const SyntheticQuant q = quant_of("w4g128", false, false, false);
  auto m = make_gpu_model(**be, &q, 5);
  ASSERT_NE(m, nullptr);
  BenchConfig bc;
  bc.batches = {1, 3};
  bc.prompt = 20;
  bc.gen = 6;
  bc.repeats = 2;
  bc.ttft_prompts = {64};
  auto r = run_bench(*m, bc);
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  ASSERT_EQ(r->points.size(), 2u);
  for (const BenchPoint& p : r->points) {
    EXPECT_GT(p.decode_tokens_per_second, 0.0);
    EXPECT_TRUE(p.cuda_graph) << p.graph_error;
  }
  EXPECT_EQ(r->weight_bytes, model_weight_bytes(*m));
  EXPECT_EQ(r->quantized_weight_bytes, model_quantized_bytes(*m));
  EXPECT_GT(r->quantized_weight_bytes, 0);
  EXPECT_GT(r->runtime_weight_bytes, 0);
  EXPECT_NE(r->weight_format.find("int4 g128 asym: 14 of 15 linears packed"), std::string::npos) << r->weight_format;
  std::printf("  tiny w4g128 bench: %s; weights %lld B (packed %lld), peak device %lld B, decode b1 %.0f tok/s\n",
              r->weight_format.c_str(), static_cast<long long>(r->weight_bytes),
              static_cast<long long>(r->quantized_weight_bytes), static_cast<long long>(r->peak_device_bytes),
              r->points[0].decode_tokens_per_second);
}

// No GPU needed: the model, Llama-2-7B W4 g128, is planned at its packed size.
TEST(CudaSyntheticQuant, SevenBPlanUsesPackedBytes) {
  auto cfg = synthetic_config("llama2-7b");
  ASSERT_TRUE(cfg.is_ok());
  const SyntheticQuant q = quant_of("w4g128", false, false, false);
  const int64_t dense = estimate_weight_bytes(*cfg, 2);
  const int64_t packed = estimate_quantized_weight_bytes(*cfg, q.spec, false, false, 2);
  const int64_t runtime = estimate_quantized_runtime_bytes(*cfg, q.spec, false, false, 2);
  std::printf("  llama2-7b: dense %.2f GB, w4g128 %.2f GB (+ %.2f GB at run time)\n", dense / 1e9, packed / 1e9,
              runtime / 1e9);
  EXPECT_GT(packed, int64_t{3'800'000'000});
  EXPECT_LT(packed, int64_t{4'000'000'000});
  EXPECT_GT(dense / static_cast<double>(packed), 3.3);
  const MemoryEstimate e = estimate_memory(*cfg, packed + runtime, 2, 16, 512, 641);
  EXPECT_LT(e.total(), estimate_memory(*cfg, dense, 2, 16, 512, 641).total()) << e.describe();
}

}  // namespace
}  // namespace compactor
