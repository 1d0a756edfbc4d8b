// Whole fixture models on the CUDA backend against the CPU backend (f32): logits and next-token
// NLL on the reference prompts (../shared/reference/*/prompts_logits.json), and incremental
// decoding through the KV cache (T = 1 steps, the split-key attention path) against one prefill.
// bf16 and f16 activations. Skips (GTEST_SKIP) only when no GPU is present.
// The fixtures are found under $COMPACTOR_SHARED_DIR when set (a device machine with its own
// copy), else the build's ../shared.
// Run (GPU machine): build-cuda/tests/test_cuda_model   or   ctest -L gpu
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <tuple>
#include <vector>

#include "cuda/cuda_test_util.h"
#include "backend/cuda/cuda_backend.h"
#include "bench/bench.h"
#include "bench/cuda_decode.h"
#include "model/model.h"
#include "model/sampler.h"
#include "model/synthetic.h"
#include "support/compare.h"
#include "support/fixtures.h"

namespace compactor {
namespace {

// Tolerances. Logits: ‖gpu − cpu‖ / ‖cpu‖ per prompt, after every layer's activations were
// rounded to the activation dtype. NLL: |mean gpu − mean cpu| in nats over a prompt's
// predictions (0.005 nats is 0.5% in perplexity, the whole-model bound of VERIFY.md).
double logits_tol(DType d) { return d == DType::kBF16 ? 5e-2 : 1e-2; }
double nll_tol(DType d) { return d == DType::kBF16 ? 2e-2 : 5e-3; }
double decode_tol(DType d) { return d == DType::kBF16 ? 3e-2 : 6e-3; }

using test::gpu_present;

std::vector<std::vector<int32_t>> reference_prompts(const std::string& model) {
  std::ifstream in(test::shared_dir() / "reference" / model / "prompts_logits.json");
  EXPECT_TRUE(in.good()) << "missing " << (test::shared_dir() / "reference" / model / "prompts_logits.json");
  std::vector<std::vector<int32_t>> out;
  if (!in.good()) return out;
  for (const auto& p : nlohmann::json::parse(in)) out.push_back(p["input_ids"].get<std::vector<int32_t>>());
  return out;
}

struct PromptRun {
  std::vector<float> logits;  // [T, V] f32
  double mean_nll = 0;        // over the T-1 next-token predictions
};

// One prefill of `ids` with all logits, and the mean NLL of ids[1..] through the backend's op.
PromptRun run_prompt(Model& model, const std::vector<int32_t>& ids) {
  PromptRun r;
  const int t = static_cast<int>(ids.size());
  KvCache cache = model.make_kv_cache(1, t);
  auto out = model.forward({ids.data(), BatchLayout{1, t}, LogitsMode::kAll}, cache);
  EXPECT_TRUE(out.is_ok()) << out.status().message();
  if (!out.is_ok()) return r;
  r.logits.resize(out->numel());
  copy_to_host_f32(model.backend(), *out, r.logits.data());
  std::vector<float> nll(t - 1);
  model.backend().cross_entropy(nll.data(), out->row_slice(0, t - 1), ids.data() + 1);
  for (float x : nll) r.mean_nll += x / (t - 1);
  return r;
}

using CudaModel = test::CudaVsCpuModelTest;

TEST_P(CudaModel, LogitsAndNllMatchCpu) {
  for (const auto& ids : reference_prompts(name())) {
    const PromptRun g = run_prompt(*gpu_, ids), c = run_prompt(*cpu_, ids);
    ASSERT_EQ(g.logits.size(), c.logits.size());
    const double err = test::rel_l2_error(g.logits, c.logits);
    EXPECT_LE(err, logits_tol(dtype())) << name() << " T=" << ids.size();
    EXPECT_NEAR(g.mean_nll, c.mean_nll, nll_tol(dtype())) << name() << " T=" << ids.size();
    std::printf("  %s %s T=%zu: logits rel err %.3e, mean NLL gpu %.5f cpu %.5f\n", name().c_str(),
                std::string(dtype_name(dtype())).c_str(), ids.size(), err, g.mean_nll, c.mean_nll);
  }
}

// Prefill n-k tokens, then k single-token steps: each step's logits match the row of one full
// prefill (both on the GPU), so KV append, per-position RoPE and decode attention agree.
TEST_P(CudaModel, IncrementalDecodeMatchesPrefill) {
  const auto prompts = reference_prompts(name());
  ASSERT_FALSE(prompts.empty());
  const std::vector<int32_t>& ids = prompts.back();
  const int n = static_cast<int>(ids.size()), k = std::min(8, n - 1);
  const int64_t vocab = gpu_->config().vocab_size;
  const PromptRun full = run_prompt(*gpu_, ids);

  KvCache cache = gpu_->make_kv_cache(1, n);
  auto pre = gpu_->forward({ids.data(), BatchLayout{1, n - k}, LogitsMode::kLast}, cache);
  ASSERT_TRUE(pre.is_ok()) << pre.status().message();
  for (int step = 0; step < k; ++step) {
    const int pos = n - k + step;
    auto out = gpu_->forward({ids.data() + pos, BatchLayout{1, 1}, LogitsMode::kAll}, cache);
    ASSERT_TRUE(out.is_ok()) << out.status().message();
    std::vector<float> got(vocab);
    copy_to_host_f32(*gpu_be_, *out, got.data());
    const std::vector<float> want(full.logits.begin() + pos * vocab, full.logits.begin() + (pos + 1) * vocab);
    const double err = test::rel_l2_error(got, want);
    EXPECT_LE(err, decode_tol(dtype())) << name() << " position " << pos;
    if (step == k - 1) std::printf("  %s decode at position %d: rel err %.3e vs prefill\n", name().c_str(), pos, err);
  }
}

// Greedy decoding with ids, lengths and sampling on the GPU: the graph-replayed loop gives the
// same ids as the same loop run eagerly (identical kernels), and agrees with host greedy
// decoding (forward + host arg-max), whose attention plans differ only in the key split.
TEST_P(CudaModel, DecodeLoopGraphMatchesEagerAndHost) {
  const auto prompts = reference_prompts(name());
  ASSERT_FALSE(prompts.empty());
  const std::vector<int32_t>& ids = prompts.back();
  const int n = static_cast<int>(ids.size()), steps = 12;
  std::vector<std::vector<int32_t>> runs;
  for (GraphMode mode : {GraphMode::kOn, GraphMode::kOff}) {
    KvCache cache = gpu_->make_kv_cache(1, n + steps);
    auto logits = gpu_->forward({ids.data(), BatchLayout{1, n}, LogitsMode::kLast}, cache);
    ASSERT_TRUE(logits.is_ok()) << logits.status().message();
    auto loop = CudaDecodeLoop::create(*gpu_, *gpu_be_, cache, SampleParams{}, steps, mode);
    ASSERT_TRUE(loop.is_ok()) << loop.status().message();
    ASSERT_TRUE((*loop)->start(*logits).is_ok());
    if (mode == GraphMode::kOn) {
      EXPECT_TRUE((*loop)->uses_graph()) << "capture failed: " << (*loop)->graph_error();
    }
    while ((*loop)->steps_taken() < steps) ASSERT_TRUE((*loop)->step().is_ok());
    auto tokens = (*loop)->tokens();
    ASSERT_TRUE(tokens.is_ok());
    runs.push_back(tokens->at(0));
    EXPECT_EQ(cache.lengths[0], n + steps);
  }
  ASSERT_EQ(runs[0].size(), static_cast<size_t>(steps + 1));
  EXPECT_EQ(runs[0], runs[1]) << "graph replay and eager steps chose different ids";

  KvCache cache = gpu_->make_kv_cache(1, n + steps);
  const int64_t vocab = gpu_->config().vocab_size;
  std::vector<float> host(vocab);
  std::vector<int32_t> greedy;
  auto out = gpu_->forward({ids.data(), BatchLayout{1, n}, LogitsMode::kLast}, cache);
  for (int s = 0; s <= steps && out.is_ok(); ++s) {
    copy_to_host_f32(*gpu_be_, *out, host.data());
    greedy.push_back(argmax(host.data(), vocab));
    if (s < steps) out = gpu_->forward({&greedy.back(), BatchLayout{1, 1}, LogitsMode::kLast}, cache);
  }
  ASSERT_TRUE(out.is_ok()) << out.status().message();
  int same_prefix = 0;
  while (same_prefix < static_cast<int>(greedy.size()) && greedy[same_prefix] == runs[0][same_prefix]) ++same_prefix;
  EXPECT_EQ(greedy[0], runs[0][0]) << "first token (same prefill logits) differs";
  EXPECT_GE(same_prefix, 4) << "GPU-loop and host greedy decoding diverge early";
  std::printf("  %s decode loop: %d/%zu ids equal to host greedy before the first difference\n", name().c_str(),
              same_prefix, greedy.size());
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CudaModel,
                         ::testing::Combine(::testing::Values("stories260K", "fixture-llama-sp", "fixture-llama-bpe"),
                                            ::testing::Values(DType::kBF16, DType::kF16)),
                         [](const auto& info) {
                           std::string n = std::get<0>(info.param) + "_" + std::string(dtype_name(std::get<1>(info.param)));
                           for (char& c : n) if (c == '-') c = '_';
                           return n;
                         });


// A synthetic model (random weights made on the GPU) runs end to end: finite logits, the bench's
// CUDA path (TTFT, graph-replayed decode) and its memory accounting on the "tiny" shapes.
TEST(CudaSynthetic, TinyModelRunsAndBenches) {
  if (!gpu_present()) GTEST_SKIP() << "no CUDA GPU on this machine";
  auto be = CudaBackend::create();
  ASSERT_TRUE(be.is_ok()) << be.status().message();
  auto cfg = synthetic_config("tiny");
  ASSERT_TRUE(cfg.is_ok()) << cfg.status().message();
  auto model = Model::allocate(*cfg, **be);
  ASSERT_TRUE(model.is_ok()) << model.status().message();
  CudaBackend* cuda = be->get();
  fill_synthetic_weights(**model, 3, [&](View v, uint64_t stream, float mean, float stddev) {
    ASSERT_TRUE(cuda->fill_normal(v, stream, mean, stddev).is_ok());
  });
  KvCache cache = (*model)->make_kv_cache(2, 40);
  std::vector<int32_t> ids(2 * 33);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>((i * 37) % cfg->vocab_size);
  auto logits = (*model)->forward({ids.data(), BatchLayout{2, 33}, LogitsMode::kLast}, cache);
  ASSERT_TRUE(logits.is_ok()) << logits.status().message();
  std::vector<float> host(logits->numel());
  copy_to_host_f32(**be, *logits, host.data());
  double sq = 0;
  for (float x : host) {
    ASSERT_TRUE(std::isfinite(x));
    sq += double(x) * x;
  }
  EXPECT_GT(sq, 0.0) << "all-zero logits: weights not filled";

  BenchConfig bc;
  bc.batches = {1, 3};
  bc.prompt = 20;
  bc.gen = 6;
  bc.repeats = 2;
  bc.ttft_prompts = {64};
  auto r = run_bench(**model, bc);
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  ASSERT_EQ(r->points.size(), 2u);
  ASSERT_EQ(r->ttft.size(), 1u);
  EXPECT_GT(r->ttft[0].ms, 0.0);
  for (const BenchPoint& p : r->points) {
    EXPECT_GT(p.decode_tokens_per_second, 0.0);
    EXPECT_TRUE(p.cuda_graph) << p.graph_error;
  }
  EXPECT_GE(r->peak_device_bytes, r->weight_bytes + r->peak_kv_bytes);
  EXPECT_EQ(r->weight_bytes, model_weight_bytes(**model));
}

}  // namespace
}  // namespace compactor
