#include "eval/perplexity.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "core/progress.h"

namespace compactor {

Result<PerplexityPlan> plan_perplexity(int64_t n_tokens, int64_t max_positions, const PerplexityOptions& opts) {
  if (opts.ctx < 2) return invalid_argument("--ctx must be at least 2 (got {})", opts.ctx);
  if (opts.ctx > max_positions)
    return invalid_argument("--ctx {} exceeds the model's maximum context {} (max_position_embeddings)", opts.ctx,
                            max_positions);
  PerplexityPlan plan;
  plan.chunk = opts.bos == BosMode::kPrepend ? opts.ctx - 1 : opts.ctx;
  const int stride = opts.stride > 0 ? opts.stride : plan.chunk;
  if (stride > plan.chunk)
    return invalid_argument("--stride {} is larger than the window's {} text tokens", stride, plan.chunk);
  int64_t scored_until = 0;
  for (int64_t start = 0; start + plan.chunk <= n_tokens; start += stride) {
    const int64_t first_target = opts.bos == BosMode::kPrepend ? start : start + 1;
    plan.starts.push_back(start);
    plan.score_from.push_back(std::max(first_target, scored_until));
    scored_until = start + plan.chunk;
    if (opts.limit_windows > 0 && static_cast<int64_t>(plan.starts.size()) >= opts.limit_windows) break;
  }
  if (plan.starts.empty())
    return invalid_argument("the dataset has {} tokens, fewer than one window of {} tokens (--ctx {})", n_tokens,
                            plan.chunk, opts.ctx);
  return plan;
}

void fill_window(const std::vector<int32_t>& tokens, int32_t bos_id, const PerplexityPlan& plan, size_t w,
                 BosMode bos, int32_t* ids, int32_t* targets) {
  const int64_t start = plan.starts[w];
  const int ctx = bos == BosMode::kPrepend ? plan.chunk + 1 : plan.chunk;
  for (int j = 0; j < ctx; ++j) {
    // Position j of the window holds text token `src` and predicts text token `src + 1`.
    const int64_t src = bos == BosMode::kPrepend ? start + j - 1 : start + j;
    ids[j] = src < start ? bos_id : tokens[src];
    const int64_t tgt = src + 1;
    targets[j] = (tgt >= plan.score_from[w] && tgt < start + plan.chunk) ? tokens[tgt] : -1;
  }
}

Result<PerplexityResult> evaluate_perplexity(Model& model, const std::vector<int32_t>& tokens, int32_t bos_id,
                                             const PerplexityOptions& opts) {
  if (opts.bos == BosMode::kPrepend && bos_id < 0)
    return invalid_argument("the tokenizer has no BOS token; use --no-bos");
  ASSIGN_OR_RETURN(PerplexityPlan plan, plan_perplexity(static_cast<int64_t>(tokens.size()),
                                                        model.config().max_position_embeddings, opts));
  const int ctx = opts.bos == BosMode::kPrepend ? plan.chunk + 1 : plan.chunk;
  const int batch = opts.batch > 0 ? opts.batch : std::max(1, 2048 / ctx);
  const int64_t n_windows = static_cast<int64_t>(plan.starts.size());
  PerplexityResult res;
  res.text_tokens = static_cast<int64_t>(tokens.size());
  res.windows = n_windows;
  auto t0 = std::chrono::steady_clock::now();
  Progress progress("perplexity", n_windows, opts.quiet);
  double nll_sum = 0;
  std::vector<int32_t> ids, targets;
  std::vector<float> nll;
  for (int64_t w0 = 0; w0 < n_windows; w0 += batch) {
    const int b = static_cast<int>(std::min<int64_t>(batch, n_windows - w0));
    ids.assign(static_cast<size_t>(b) * ctx, 0);
    targets.assign(ids.size(), -1);
    for (int i = 0; i < b; ++i)
      fill_window(tokens, bos_id, plan, w0 + i, opts.bos, &ids[i * ctx], &targets[i * ctx]);
    KvCache cache = model.make_kv_cache(b, ctx);
    ASSIGN_OR_RETURN(View logits, model.forward({ids.data(), BatchLayout{b, ctx}, LogitsMode::kAll}, cache));
    std::vector<int32_t> safe_targets(targets);
    for (auto& t : safe_targets) t = std::max(t, 0);
    nll.resize(ids.size());
    model.backend().cross_entropy(nll.data(), logits, safe_targets.data());
    for (int i = 0; i < b; ++i) {
      double window_sum = 0;
      int64_t window_count = 0;
      for (int j = 0; j < ctx; ++j)
        if (targets[i * ctx + j] >= 0) { window_sum += nll[i * ctx + j]; ++window_count; }
      nll_sum += window_sum;
      res.predictions += window_count;
      res.window_nll.push_back(window_count ? window_sum / window_count : 0.0);
    }
    progress.update(w0 + b, fmt::format("ppl {:.4f}", std::exp(nll_sum / std::max<int64_t>(1, res.predictions))));
  }
  res.mean_nll = nll_sum / static_cast<double>(res.predictions);
  res.ppl = std::exp(res.mean_nll);
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  progress.finish(fmt::format("ppl {:.4f}", res.ppl));
  return res;
}

}  // namespace compactor
