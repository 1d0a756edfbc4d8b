// Multiple-choice evaluation with lm-evaluation-harness's conventions (docs/VERIFY.md):
//   - tokens: lm-eval's `_encode_pair`: trailing whitespace of the context moves to the front of
//     the continuation; the continuation's tokens are those of tokenize(context + continuation)
//     after the first len(tokenize(context)); no BOS unless asked (lm-eval's add_bos_token=False);
//     too long: the context loses tokens from the left (lm-eval's left truncation), by the
//     longest choice so all choices share one context;
//   - acc: argmax of Σ log p over choices == gold (ties: the first, numpy's argmax);
//   - acc_norm: argmax of Σ log p / (UTF-8 bytes of the choice text, without the delimiter);
//   - mc2 (TruthfulQA): Σ p(true answers) / Σ p(all answers), p = exp(Σ log p).
// Test: build-*/tests/test_mc_metrics (crafted log-likelihoods), test_mc_scoring (models).
#pragma once

#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>

#include "eval/loglikelihood.h"
#include "eval/stats.h"
#include "eval/task_items.h"
#include "tokenizer/tokenizer.h"

namespace compactor {

struct McTokenizeOptions {
  bool add_bos = false;
  int64_t max_length = 0;  // positions the model takes; 0: no truncation
};

// One item's request. `truncated` (optional) is set when the context lost tokens.
Result<LoglikRequest> tokenize_item(const Tokenizer& tok, const McItem& item, const McTokenizeOptions& opts,
                                    bool* truncated = nullptr);

int argmax_first(const std::vector<double>& v);
double mc2_score(const std::vector<double>& loglik, const std::vector<uint8_t>& true_mask);

// Per-item scores (1/0 for acc and acc_norm, a probability for mc2); vectors of the metrics the
// task does not compute stay empty.
struct McScores {
  std::vector<double> acc, acc_norm, mc2;
  const std::vector<double>& of(McMetric m) const { return m == McMetric::kAcc ? acc : m == McMetric::kAccNorm ? acc_norm : mc2; }
};
McScores score_items(const std::vector<McItem>& items, const std::vector<std::vector<double>>& loglik,
                     const std::vector<McMetric>& metrics);

struct McRunOptions {
  McTokenizeOptions tokenize;
  LoglikOptions loglik;
};

struct McRun {
  std::vector<std::vector<double>> loglik;  // [item][choice]
  McScores scores;
  int64_t truncated = 0;  // items whose context was cut
  double seconds = 0;     // tokenizing + scoring
  LoglikStats stats;
};

// Tokenizes and scores every item of `task` on `model`.
Result<McRun> run_multiple_choice(Model& model, const Tokenizer& tok, const TaskInstance& task,
                                  const std::vector<McMetric>& metrics, const McRunOptions& opts);

// The results of one task as JSON: task, split, n, shots, per metric {value, stderr, ci95}; for
// grouped tasks (MMLU) the micro average under the metric's name, the macro average as
// "<metric>_macro", and "groups": {name: {n, <metric>: ...}}. With `base` (the same items scored
// on a base model): "base": {metric: ...} and "delta": {metric: model - base, paired}.
nlohmann::json summarize_task(const TaskInstance& task, const std::vector<McMetric>& metrics, const McScores& scores,
                              const McScores* base, const BootstrapOptions& boot);
nlohmann::json estimate_json(const Estimate& e);  // {"value", "stderr", "ci95": [lo, hi]}

}  // namespace compactor
