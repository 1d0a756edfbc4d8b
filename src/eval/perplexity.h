// Perplexity with the convention of docs/VERIFY.md (the one ../shared/reference uses):
// the text is tokenized once without special tokens (N tokens). With BOS (default) each window is
// [BOS] + a chunk of ctx-1 tokens and every chunk token is predicted (the first from BOS alone);
// without BOS a window is ctx tokens and the ctx-1 after the first are predicted. Windows start
// every `stride` chunk tokens (default: the chunk length, i.e. non-overlapping); with a shorter
// stride only tokens that no earlier window scored are scored (the sliding-window evaluation).
// The incomplete tail is dropped. PPL = exp(mean NLL over all scored predictions).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "model/model.h"

namespace compactor {

enum class BosMode { kPrepend, kNone };

struct PerplexityOptions {
  int ctx = 512;
  BosMode bos = BosMode::kPrepend;
  int stride = 0;              // 0: chunk length (non-overlapping)
  int64_t limit_windows = 0;   // 0: all windows
  int batch = 0;               // windows per forward; 0: about 2048 tokens per forward
  bool quiet = false;          // no progress on stderr
};

struct PerplexityResult {
  double ppl = 0, mean_nll = 0;
  int64_t predictions = 0;     // scored tokens
  int64_t windows = 0;
  int64_t text_tokens = 0;     // N
  double seconds = 0;
  std::vector<double> window_nll;  // mean NLL per window (for confidence intervals)
};

// Plans the windows: start offsets into the token stream (chunk-relative).
struct PerplexityPlan {
  int chunk = 0;                      // text tokens per window
  std::vector<int64_t> starts;        // token offset of each window
  std::vector<int64_t> score_from;    // first token index scored in each window (absolute)
};
Result<PerplexityPlan> plan_perplexity(int64_t n_tokens, int64_t max_positions, const PerplexityOptions& opts);

// Fills window w's input ids and next-token targets (-1: not scored); ids, targets: [window length]
// (ctx with BOS: chunk + 1). Shared with the KL-divergence evaluation, which scores the same tokens.
void fill_window(const std::vector<int32_t>& tokens, int32_t bos_id, const PerplexityPlan& plan, size_t w,
                 BosMode bos, int32_t* ids, int32_t* targets);

Result<PerplexityResult> evaluate_perplexity(Model& model, const std::vector<int32_t>& tokens, int32_t bos_id,
                                             const PerplexityOptions& opts);

}  // namespace compactor
