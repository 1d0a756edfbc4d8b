// Synthetic models on the CPU (model/synthetic.h): the quantized ones (bench --quant) hold packed
// linears of the right shapes, dequantize to N(0, 0.02²)-like weights, run a finite forward, and
// their bytes match the memory plan's estimate (bench/memory_plan.h); the CLI takes --quant on
// `--synthetic tiny --device cpu`. The GPU side is tests/cuda/test_cuda_synthetic_quant.cpp.
// Run: build-*/tests/test_synthetic_model
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "backend/backend.h"
#include "backend/cpu/cpu_qmatmul.h"
#include "bench/memory_plan.h"
#include "formats/nf4.h"
#include "formats/quant_pack.h"
#include "model/synthetic.h"
#include "support/fixtures.h"

namespace compactor {
namespace {

std::unique_ptr<Model> make_tiny(Backend& be, const SyntheticQuant* quant, uint64_t seed = 7) {
  auto cfg = synthetic_config("tiny");
  EXPECT_TRUE(cfg.is_ok()) << cfg.status().message();
  auto m = make_synthetic_model(
      *cfg, be, quant, seed, [&](View v, uint64_t s, float mean, float sd) { fill_normal_host(be, v, s, mean, sd); },
      [&](View v, uint64_t s) { fill_words_host(be, v, s); });
  EXPECT_TRUE(m.is_ok()) << m.status().message();
  return m.is_ok() ? std::move(m).value() : nullptr;
}

SyntheticQuant quant_of(const std::string& preset, bool sym = false, bool act_order = false, bool lm_head = false) {
  auto q = synthetic_quant(preset, sym, act_order, lm_head);
  EXPECT_TRUE(q.is_ok()) << q.status().message();
  return q.is_ok() ? *q : SyntheticQuant{};
}

TEST(SyntheticQuant, PresetsAndErrors) {
  SyntheticQuant q = quant_of("w4g128");
  EXPECT_EQ(q.format, Format::kInt4);
  EXPECT_EQ(q.spec.bits, 4);
  EXPECT_EQ(q.spec.group_size, 128);
  EXPECT_EQ(q.format_label(), "int4 g128 asym");
  EXPECT_EQ(quant_of("w8g128", true, true).format_label(), "int8 g128 sym act-order");
  EXPECT_EQ(quant_of("w8", true).format_label(), "int8 per-channel sym");
  auto per_channel_act_order = synthetic_quant("w4", false, true, false);
  ASSERT_FALSE(per_channel_act_order.is_ok());
  EXPECT_NE(per_channel_act_order.status().message().find("--act-order"), std::string::npos);
  EXPECT_EQ(quant_of("w3g128").format, Format::kInt3);
  EXPECT_EQ(quant_of("w2g64").spec.group_size, 64);
  auto bad = synthetic_quant("w5g128", false, false, false);
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("w4g128"), std::string::npos) << bad.status().message();
  EXPECT_NE(bad.status().message().find("--quant"), std::string::npos) << bad.status().message();
}

// Prefill 2 × 6 tokens into `cache`: finite logits of a sensible spread (rms in (1e-3, 100)).
// host: the logits, for the caller's decode step.
void expect_sane_prefill(Model& m, Backend& be, KvCache& cache, std::vector<float>& host) {
  std::vector<int32_t> ids{1, 17, 300, 42, 5, 99, 2, 511, 8, 64, 128, 256};
  auto logits = m.forward({ids.data(), BatchLayout{2, 6}, LogitsMode::kLast}, cache);
  ASSERT_TRUE(logits.is_ok()) << logits.status().message();
  host.resize(logits->numel());
  copy_to_host_f32(be, *logits, host.data());
  double sq = 0;
  for (float v : host) {
    ASSERT_TRUE(std::isfinite(v));
    sq += double(v) * v;
  }
  const double rms = std::sqrt(sq / host.size());
  EXPECT_GT(rms, 1e-3);
  EXPECT_LT(rms, 100.0);
}

TEST(SyntheticQuant, TinyModelIsPackedAndRunsFinite) {
  auto be = make_backend(BackendKind::kCpu);
  ASSERT_TRUE(be.is_ok());
  const SyntheticQuant q = quant_of("w4g128");
  auto m = make_tiny(**be, &q);
  ASSERT_NE(m, nullptr);
  const ModelConfig& c = m->config();
  ASSERT_NE(m->quantization(), nullptr);
  for (const LayerWeights& lw : m->weights().layers) {
    for (const LinearWeight* l : {&lw.q, &lw.k, &lw.v, &lw.o, &lw.gate, &lw.up, &lw.down}) {
      EXPECT_EQ(l->format, Format::kInt4);
      EXPECT_EQ(l->weight.data, nullptr) << "a dense copy was allocated";
      EXPECT_EQ(l->qweight.dtype, DType::kI32);
      EXPECT_EQ(l->qweight.shape, (Shape{packed_words(4, l->in_features), l->out_features}));
      EXPECT_EQ(l->scales.shape, (Shape{quant_groups(128, l->in_features), l->out_features}));
      EXPECT_EQ(l->scales.dtype, DType::kF16);
      EXPECT_EQ(l->qzeros.shape, (Shape{quant_groups(128, l->in_features), packed_words(4, l->out_features)}));
      EXPECT_EQ(l->g_idx.data, nullptr);
      EXPECT_TRUE(check_packed_shapes("linear", 4, 128, l->out_features, l->in_features, l->qweight, l->scales,
                                      l->qzeros, l->g_idx)
                      .is_ok());
    }
  }
  EXPECT_FALSE(m->weights().lm_head.quantized());
  EXPECT_NE(m->weights().lm_head.weight.data, nullptr);
  EXPECT_GT(model_quantized_bytes(*m), 0);
  EXPECT_EQ(model_weight_bytes(*m), estimate_quantized_weight_bytes(c, q.spec, false, false, 4));

  // Prefill 2 × 6 then one decode step: finite logits of a sensible spread.
  KvCache cache = m->make_kv_cache(2, 16);
  std::vector<float> host;
  ASSERT_NO_FATAL_FAILURE(expect_sane_prefill(*m, **be, cache, host));
  std::vector<int32_t> step{3, 4};
  auto next = m->forward({step.data(), BatchLayout{2, 1}, LogitsMode::kLast}, cache);
  ASSERT_TRUE(next.is_ok()) << next.status().message();
  copy_to_host_f32(**be, *next, host.data());
  for (float v : host) ASSERT_TRUE(std::isfinite(v));
}

// The scale formula: dequantized weights have mean ~0 and std ~0.02 for every width, sym or not.
TEST(SyntheticQuant, DequantizedWeightsLookLikeTheDenseOnes) {
  auto be = make_backend(BackendKind::kCpu);
  ASSERT_TRUE(be.is_ok());
  for (const char* preset : {"w8", "w4g128", "w4g32", "w3g128", "w2g64", "w2g16"}) {
    for (bool sym : {false, true}) {
      const SyntheticQuant q = quant_of(preset, sym);
      auto m = make_tiny(**be, &q);
      ASSERT_NE(m, nullptr);
      const LinearWeight& w = m->weights().layers[1].gate;  // [688, 256]
      std::vector<float> dense(w.out_features * w.in_features);
      dequantize_ref(packed_ref(w), dense.data());
      double sum = 0, sq = 0;
      for (float v : dense) {
        sum += v;
        sq += double(v) * v;
      }
      const double mean = sum / dense.size(), sd = std::sqrt(sq / dense.size() - mean * mean);
      SCOPED_TRACE(fmt::format("{} sym {}: mean {:.5f} std {:.5f} (scale {:.6f})", preset, sym, mean, sd,
                               synthetic_scale(q.spec)));
      EXPECT_NEAR(sd, 0.02, 0.002);
      EXPECT_LT(std::abs(mean), 0.001);
    }
  }
}

// bench --quant nf4: NF4 storage (formats/nf4.h) of every block linear and lm_head, dequantized
// std ~0.02 and mean ~0, a finite forward through the CPU NF4 matmul.
TEST(SyntheticQuant, Nf4TinyModelIsPackedLooksDenseAndRunsFinite) {
  const SyntheticQuant q = quant_of("nf4", false, false, /*lm_head=*/true);
  EXPECT_EQ(q.format, Format::kNF4);
  EXPECT_EQ(q.spec.group_size, 64);
  EXPECT_EQ(q.format_label(), "nf4 block 64");
  auto sym = synthetic_quant("nf4", true, false, false);
  ASSERT_FALSE(sym.is_ok());
  EXPECT_NE(sym.status().message().find("--quant nf4"), std::string::npos);
  auto be = make_backend(BackendKind::kCpu);
  ASSERT_TRUE(be.is_ok());
  auto m = make_tiny(**be, &q);
  ASSERT_NE(m, nullptr);
  int64_t expected_bytes = 0;
  const LinearWeight& head = m->weights().lm_head;
  std::vector<const LinearWeight*> linears{&head};
  for (const LayerWeights& lw : m->weights().layers)
    for (const LinearWeight* l : {&lw.q, &lw.k, &lw.v, &lw.o, &lw.gate, &lw.up, &lw.down}) linears.push_back(l);
  for (const LinearWeight* l : linears) {
    EXPECT_EQ(l->format, Format::kNF4);
    EXPECT_EQ(l->weight.data, nullptr) << "a dense copy was allocated";
    const Status s = check_nf4_shapes("linear", 64, l->out_features, l->in_features, l->qweight, l->scales,
                                      l->nested_scales, l->nested_offset);
    EXPECT_TRUE(s.is_ok()) << s.message();
    expected_bytes += nf4_packed_bytes(l->out_features, l->in_features, 64);
  }
  EXPECT_EQ(model_quantized_bytes(*m), expected_bytes);
  for (const LinearWeight* l : {&m->weights().layers[1].gate, &m->weights().layers[0].down}) {  // K = 256, 688
    std::vector<float> dense(l->out_features * l->in_features);
    dequantize_linear_ref(*l, dense.data());
    double sum = 0, sq = 0;
    for (float v : dense) {
      sum += v;
      sq += double(v) * v;
    }
    const double mean = sum / dense.size(), sd = std::sqrt(sq / dense.size() - mean * mean);
    SCOPED_TRACE(fmt::format("nf4 [{}, {}]: mean {:.5f} std {:.5f}", l->out_features, l->in_features, mean, sd));
    EXPECT_NEAR(sd, 0.02, 0.002);
    EXPECT_LT(std::abs(mean), 0.001);
  }
  KvCache cache = m->make_kv_cache(2, 16);
  std::vector<float> host;
  ASSERT_NO_FATAL_FAILURE(expect_sane_prefill(*m, **be, cache, host));
}

TEST(SyntheticQuant, ActOrderGroupsArePermutedAndFull) {
  auto be = make_backend(BackendKind::kCpu);
  ASSERT_TRUE(be.is_ok());
  const SyntheticQuant q = quant_of("w3g128", false, /*act_order=*/true, /*lm_head=*/true);
  auto m = make_tiny(**be, &q);
  ASSERT_NE(m, nullptr);
  EXPECT_TRUE(m->weights().lm_head.quantized());
  const LinearWeight& down = m->weights().layers[0].down;  // K = 688: groups of 128 x 5 + 48
  ASSERT_NE(down.g_idx.data, nullptr);
  const int32_t* g = down.g_idx.as<const int32_t>();
  std::map<int, int> counts;
  bool sorted = true;
  for (int64_t k = 0; k < down.in_features; ++k) {
    ++counts[g[k]];
    if (k > 0 && g[k] < g[k - 1]) sorted = false;
  }
  EXPECT_FALSE(sorted) << "g_idx should be a permutation, not k / group_size";
  ASSERT_EQ(counts.size(), 6u);
  for (int grp = 0; grp < 5; ++grp) EXPECT_EQ(counts[grp], 128) << "group " << grp;
  EXPECT_EQ(counts[5], 48);
  EXPECT_EQ(model_weight_bytes(*m), estimate_quantized_weight_bytes(m->config(), q.spec, true, true, 4));
  KvCache cache = m->make_kv_cache(1, 8);
  std::vector<int32_t> ids{1, 2, 3, 4};
  auto logits = m->forward({ids.data(), BatchLayout{1, 4}, LogitsMode::kLast}, cache);
  ASSERT_TRUE(logits.is_ok()) << logits.status().message();
  std::vector<float> host(logits->numel());
  copy_to_host_f32(**be, *logits, host.data());
  for (float v : host) ASSERT_TRUE(std::isfinite(v));
}

// The memory plan of the model uses packed bytes: Llama-2-7B W4 g128 is ~3.9 GB, not 13.5.
TEST(SyntheticQuant, SevenBPlanUsesPackedBytes) {
  auto cfg = synthetic_config("llama2-7b");
  ASSERT_TRUE(cfg.is_ok());
  const int64_t dense = estimate_weight_bytes(*cfg, 2);
  const SyntheticQuant q = quant_of("w4g128");
  const int64_t packed = estimate_quantized_weight_bytes(*cfg, q.spec, false, false, 2);
  // Block linears at 4 + 16/128 + 4/128 bits per weight; embeddings and lm_head bf16 (2 x 262 MB).
  const double linears = 32.0 * (4.0 * 4096 * 4096 + 3.0 * 4096 * 11008);
  const double expected = linears * (4.0 + 16.0 / 128 + 4.0 / 128) / 8 + 2.0 * 32000 * 4096 * 2;
  EXPECT_NEAR(static_cast<double>(packed), expected, 2e6) << "dense " << dense;
  EXPECT_GT(dense / static_cast<double>(packed), 3.3);
  const int64_t runtime = estimate_quantized_runtime_bytes(*cfg, q.spec, false, false, 2);
  EXPECT_GT(runtime, static_cast<int64_t>(linears * 0.5 * 0.95));  // the repacked copies, ~4 bits per weight
  EXPECT_LT(runtime, static_cast<int64_t>(linears * 0.6));
  const MemoryEstimate e = estimate_memory(*cfg, packed + runtime, 2, 1, 512, 641);
  EXPECT_EQ(e.weights, packed + runtime);
  EXPECT_LT(e.total(), dense) << e.describe();
}

// The CLI end to end on the CPU: --quant with --compare-dense on the tiny synthetic model.
struct Cli {
  int code = -1;
  std::string out;
};

Cli run_cli(const std::string& args) {
  const std::string cmd = test::binary_path().string() + " " + args + " 2>&1";
  Cli r;
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  const int status = pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

TEST(SyntheticQuantCli, BenchTinyQuantComparesWithDense) {
  Cli r = run_cli(
      "bench --synthetic tiny --device cpu --quant w4g128 --compare-dense --batch 1,2 --prompt 8 --gen 3 "
      "--repeats 1 --json --no-record --threads 2");
  ASSERT_EQ(r.code, 0) << r.out;
  nlohmann::json j = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << r.out;
  EXPECT_NE(j["weight_format"].get<std::string>().find("int4 g128 asym: 14 of 15 linears packed"), std::string::npos)
      << j["weight_format"];
  EXPECT_GT(j["quantized_weight_bytes"].get<int64_t>(), 0);
  EXPECT_EQ(j["quantization"]["preset"], "w4g128");
  EXPECT_EQ(j["dense"]["weight_format"], "dense f32");
  EXPECT_LT(j["weight_bytes"].get<int64_t>(), j["dense"]["weight_bytes"].get<int64_t>());
  ASSERT_EQ(j["decode_speedup_vs_dense"].size(), 2u) << j["decode_speedup_vs_dense"];
  for (const auto& x : j["decode_speedup_vs_dense"]) EXPECT_GT(x["decode_speedup"].get<double>(), 0.0);
  for (const auto& p : j["points"]) EXPECT_GT(p["decode_tokens_per_second"].get<double>(), 0.0);
}

TEST(SyntheticQuantCli, BenchTinyNf4) {
  Cli r = run_cli("bench --synthetic tiny --device cpu --quant nf4 --batch 1 --prompt 8 --gen 3 --repeats 1 --json "
                  "--no-record --threads 2");
  ASSERT_EQ(r.code, 0) << r.out;
  nlohmann::json j = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << r.out;
  EXPECT_NE(j["weight_format"].get<std::string>().find("nf4 g64: 14 of 15 linears packed"), std::string::npos) << j["weight_format"];
  EXPECT_EQ(j["quantization"]["preset"], "nf4");
  for (const auto& p : j["points"]) EXPECT_GT(p["decode_tokens_per_second"].get<double>(), 0.0);
}

TEST(SyntheticQuantCli, FlagErrors) {
  Cli bad = run_cli("bench --synthetic tiny --device cpu --quant w5 --no-record");
  EXPECT_EQ(bad.code, 1) << bad.out;
  EXPECT_NE(bad.out.find("--quant: unknown preset 'w5'"), std::string::npos) << bad.out;
  Cli no_quant = run_cli("bench --synthetic tiny --device cpu --compare-dense --no-record");
  EXPECT_EQ(no_quant.code, 1) << no_quant.out;
  EXPECT_NE(no_quant.out.find("need --quant"), std::string::npos) << no_quant.out;
  Cli no_synth = run_cli("bench " + test::model_dir("stories260K").string() + " --quant w4g128 --no-record");
  EXPECT_EQ(no_synth.code, 1) << no_synth.out;
  EXPECT_NE(no_synth.out.find("--synthetic"), std::string::npos) << no_synth.out;
  Cli big_cpu = run_cli("bench --synthetic llama2-7b --device cpu --quant w4g128 --no-record");
  EXPECT_EQ(big_cpu.code, 1) << big_cpu.out;
  EXPECT_NE(big_cpu.out.find("--device cuda"), std::string::npos) << big_cpu.out;
}

}  // namespace
}  // namespace compactor
