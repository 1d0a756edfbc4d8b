// The evaluation harness on the CUDA backend against the CPU backend (f32): multiple-choice
// log-likelihoods of synthetic requests that exercise every path of score_loglikelihoods (shared
// prefixes run once, KV rows copied on the device, choices sharing a sequence, length-sorted
// continuation passes, several batches), the GPU harness against one whole-sequence forward on
// the GPU, and KL divergence of the GPU model to the CPU model (exact and from saved top-k logits).
// Needs no tokenizer or task data (the device machine gets only config.json and weights).
// Skips (GTEST_SKIP) only when no GPU is present.
// Run (GPU machine): build-cuda/tests/test_cuda_eval   or   ctest -L gpu
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdlib>
#include <string>
#include <tuple>
#include <vector>

#include "cuda/cuda_test_util.h"
#include "backend/cuda/cuda_backend.h"
#include "eval/kl_divergence.h"
#include "eval/loglikelihood.h"
#include "eval/stats.h"
#include "model/model.h"
#include "support/fixtures.h"

namespace compactor {
namespace {

// Per scored token, in nats: bf16 activations round every layer's output to 8 bits of mantissa.
double token_tol(DType d) { return d == DType::kBF16 ? 6e-2 : 1.5e-2; }
// Plus a part relative to the log-likelihood: a very unlikely token sits far below the row's
// maximum logit, and the rounding error of that logit grows with its distance (two roundings of
// the activation dtype: 2^-7 for bf16, 2^-10 for f16). On the H100, stories260K in bf16 scores a
// single -18.7-nat token 0.081 nats away from the f32 CPU value.
double loglik_tol(DType d, double tokens, double loglik) {
  return token_tol(d) * tokens + (d == DType::kBF16 ? 0x1p-7 : 0x1p-10) * std::fabs(loglik);
}

// 16 items: half share an 80-token prefix; choices of 1..8 tokens, some single-token choices
// (one shared sequence), some sharing their first tokens.
std::vector<LoglikRequest> synthetic_requests(int64_t vocab) {
  SplitMix64 rng(7);
  auto tok = [&]() { return static_cast<int32_t>(3 + rng.below(static_cast<uint64_t>(vocab - 3))); };
  std::vector<int32_t> prefix(80);
  for (auto& t : prefix) t = tok();
  std::vector<LoglikRequest> reqs(16);
  for (size_t i = 0; i < reqs.size(); ++i) {
    LoglikRequest& r = reqs[i];
    if (i % 2 == 0) r.context = prefix;
    const size_t own = 1 + rng.below(40);
    for (size_t t = 0; t < own; ++t) r.context.push_back(tok());
    const bool single = i % 4 == 1;
    for (int c = 0; c < 4; ++c) {
      std::vector<int32_t> cont(single ? 1 : 1 + rng.below(8));
      for (auto& t : cont) t = tok();
      if (c == 3 && !single) {  // the same input as choice 0, another last token
        cont = r.continuations[0];
        cont.back() = tok();
      }
      r.continuations.push_back(std::move(cont));
    }
  }
  return reqs;
}

// Σ log p(cont | ctx) from one forward of ctx + cont on `model`.
double whole_sequence_loglik(Model& model, const std::vector<int32_t>& ctx, const std::vector<int32_t>& cont) {
  std::vector<int32_t> ids = ctx;
  ids.insert(ids.end(), cont.begin(), cont.end() - 1);
  const int n = static_cast<int>(ids.size());
  KvCache cache = model.make_kv_cache(1, n);
  auto logits = model.forward({ids.data(), BatchLayout{1, n}, LogitsMode::kAll}, cache);
  EXPECT_TRUE(logits.is_ok()) << logits.status().message();
  if (!logits.is_ok()) return NAN;
  const int64_t v = model.config().vocab_size;
  std::vector<float> host(static_cast<size_t>(logits->numel())), lsm(v);
  copy_to_host_f32(model.backend(), *logits, host.data());
  double ll = 0;
  for (size_t t = 0; t < cont.size(); ++t) {
    log_softmax_row(host.data() + (ctx.size() - 1 + t) * v, v, lsm.data());
    ll += lsm[cont[t]];
  }
  return ll;
}

using CudaEval = test::CudaVsCpuModelTest;

TEST_P(CudaEval, LoglikelihoodsMatchCpuAndWholeSequences) {
  const auto reqs = synthetic_requests(gpu_->config().vocab_size);
  LoglikOptions small;
  small.max_tokens = 128;  // several batches and continuation passes
  LoglikStats gs;
  auto g = score_loglikelihoods(*gpu_, reqs, small, &gs);
  ASSERT_TRUE(g.is_ok()) << g.status().message();
  auto c = score_loglikelihoods(*cpu_, reqs, small);
  ASSERT_TRUE(c.is_ok()) << c.status().message();
  double worst_cpu = 0, worst_whole = 0;
  for (size_t i = 0; i < reqs.size(); ++i) {
    for (size_t k = 0; k < reqs[i].continuations.size(); ++k) {
      const double n = static_cast<double>(reqs[i].continuations[k].size());
      const double whole = whole_sequence_loglik(*gpu_, reqs[i].context, reqs[i].continuations[k]);
      EXPECT_NEAR((*g)[i][k], (*c)[i][k], loglik_tol(dtype(), n, (*c)[i][k])) << "item " << i << " choice " << k;
      EXPECT_NEAR((*g)[i][k], whole, loglik_tol(dtype(), n, (*c)[i][k])) << "item " << i << " choice " << k;
      worst_cpu = std::max(worst_cpu, std::fabs((*g)[i][k] - (*c)[i][k]) / n);
      worst_whole = std::max(worst_whole, std::fabs((*g)[i][k] - whole) / n);
    }
  }
  std::printf("  %s %s: max per-token |gpu - cpu| %.3e, |gpu harness - gpu whole sequence| %.3e nats; %lld passes\n",
              name().c_str(), std::string(dtype_name(dtype())).c_str(), worst_cpu, worst_whole,
              static_cast<long long>(gs.forward_passes));
}

TEST_P(CudaEval, KlDivergenceToCpu) {
  SplitMix64 rng(3);
  std::vector<int32_t> tokens(2000);
  for (auto& t : tokens) t = static_cast<int32_t>(3 + rng.below(static_cast<uint64_t>(cpu_->config().vocab_size - 3)));
  KlOptions o;
  o.ppl.ctx = 256;
  o.ppl.limit_windows = 4;
  o.ppl.quiet = true;
  auto exact = evaluate_kl(*gpu_, cpu_.get(), nullptr, tokens, 1, o, nullptr);
  ASSERT_TRUE(exact.is_ok()) << exact.status().message();
  const KlSummary s = summarize_kl(exact->tokens, {});
  EXPECT_LT(s.kld.value, dtype() == DType::kBF16 ? 1e-2 : 2e-3);
  EXPECT_GT(s.top1.value, 0.8);
  KlOptions save = o;
  save.save_topk = 32;
  BaseLogits base;
  ASSERT_TRUE(evaluate_kl(*cpu_, nullptr, nullptr, tokens, 1, save, &base).is_ok());
  auto approx = evaluate_kl(*gpu_, nullptr, &base, tokens, 1, o, nullptr);
  ASSERT_TRUE(approx.is_ok()) << approx.status().message();
  const KlSummary a = summarize_kl(approx->tokens, {});
  EXPECT_LE(a.kld.value, s.kld.value * 1.001 + 1e-9);
  EXPECT_DOUBLE_EQ(a.top1.value, s.top1.value);
  std::printf("  %s %s: mean KLD gpu||cpu %.3e (top-32 file %.3e), top-1 %.4f, ppl gpu %.4f cpu %.4f\n",
              name().c_str(), std::string(dtype_name(dtype())).c_str(), s.kld.value, a.kld.value, s.top1.value,
              s.ppl_model, s.ppl_base);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CudaEval,
                         ::testing::Values(std::make_tuple(std::string("stories260K"), DType::kBF16),
                                           std::make_tuple(std::string("stories260K"), DType::kF16),
                                           std::make_tuple(std::string("fixture-llama-sp"), DType::kBF16)),
                         [](const auto& info) {
                           std::string n = std::get<0>(info.param) + "_" + std::string(dtype_name(std::get<1>(info.param)));
                           for (char& ch : n) if (ch == '-') ch = '_';
                           return n;
                         });

}  // namespace
}  // namespace compactor
