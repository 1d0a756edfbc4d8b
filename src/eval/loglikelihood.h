// Batched log-likelihood of continuations given a shared context (the `loglikelihood` request of
// lm-evaluation-harness), on any backend the model runs on.
//
// For a batch of items (sorted by context length so padding stays small):
//   0. items whose contexts share a long prefix (MMLU's description and 5 shots, TruthfulQA's
//      preamble) are batched together and the prefix runs once, its KV rows copied to each item;
//   1. context pass: every item's context except its last token, one sequence per item, right
//      padded, no logits; this fills a KV cache once per item;
//   2. the item's KV rows are copied into one sequence per choice (Backend::copy, on the device);
//      choices whose inputs are equal (single-token answers " A".." D", " yes"/" no") share one;
//   3. continuation passes, the sequences sorted by length and cut into passes with little
//      padding: each sequence feeds [last context token, cont[0..n-2]] after the copied cache and
//      scores cont[0..n-1] with Backend::cross_entropy on the logits.
// Right padding never changes a real token's result (attention is causal, padded rows are ignored,
// and the continuation pass overwrites a padded cache row before any real token can attend to it).
// Result: Σ log p(cont_t | context, cont_<t) per choice, the value lm-eval's loglikelihood returns.
// Test: build-*/tests/test_mc_scoring (against log-softmax of full-sequence logits computed in the test).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "model/model.h"

namespace compactor {

struct LoglikRequest {
  std::vector<int32_t> context;                     // [L] tokens, L >= 1 (BOS included when used)
  std::vector<std::vector<int32_t>> continuations;  // one per choice, each non-empty
};

struct LoglikOptions {
  int64_t max_tokens = 4096;         // token rows per forward pass (bounds activations and logits)
  int64_t max_cache_tokens = 16384;  // KV-cache positions of one pass (all its sequences)
  int max_sequences = 256;           // choice sequences per continuation pass
  int min_shared_prefix = 64;        // shared context prefixes at least this long run once (0: never)
  bool quiet = true;          // progress on stderr
  std::string label = "loglikelihood";
};

struct LoglikStats {
  int64_t forward_passes = 0;
  int64_t context_tokens = 0;       // tokens run in context passes (padding included)
  int64_t continuation_tokens = 0;  // tokens run in continuation passes (padding included)
};

// out[i][c] = Σ log p of request i's continuation c. Every position must fit the model
// (context + continuation - 1 <= max_position_embeddings): callers truncate first.
Result<std::vector<std::vector<double>>> score_loglikelihoods(Model& model, const std::vector<LoglikRequest>& requests,
                                                              const LoglikOptions& opts, LoglikStats* stats = nullptr);

}  // namespace compactor
