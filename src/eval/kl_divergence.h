// KL divergence of a model's next-token distributions to a base model's, the statistics llama.cpp's
// `perplexity --kl-divergence` reports and users compare quantizations with: mean KL(base || model)
// with its standard error, median / 90th / 99th / 99.9th percentile and maximum, top-1 agreement
// (same argmax), mean Δp of the correct token (p_model - p_base) and its RMS, and both
// perplexities. Tokens are the predictions of the perplexity convention (perplexity.h): the same
// windows, the same scored positions.
//
// Base logits can be saved once (`--save-logits`) as a safetensors file holding, per scored
// position, the base's top-k token ids and log-probabilities and the log-probability of the correct
// token ("top-k compressed"). Against a saved base the KL is that of the two distributions coarsened
// to {top-k tokens of the base, everything else}: exact when k = V, otherwise a lower bound of the
// true KL (log-sum inequality) that is close when the tail mass is small; top-1 agreement and Δp
// are exact. The file records the data hash and every window setting, and loading refuses a file
// made with other settings or another text.
// Test: build-*/tests/test_kl_divergence (crafted logits), test_kl_models (fixture models).
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "eval/perplexity.h"
#include "eval/stats.h"

namespace compactor {

struct TokenComparison {
  double kld = 0;                 // KL(base || model) in nats
  double p_base = 0, p_model = 0; // probability of the correct token
  double nll_base = 0, nll_model = 0;  // -log of those (kept in logs: p can underflow)
  bool same_top1 = false;
};

// base_logits, model_logits: [V] f32 (host) of one position; target: the correct next token.
TokenComparison compare_token(const float* base_logits, const float* model_logits, int64_t vocab, int32_t target);

// log-softmax of one row: out[V] = logits - logsumexp(logits).
void log_softmax_row(const float* logits, int64_t vocab, float* out);

// The k most probable tokens of a row, most probable first: ids[k], logp[k].
void top_k_logprobs(const float* logits, int64_t vocab, int k, int32_t* ids, float* logp);

// Against a saved base row (top-k ids/log-probs and the correct token's log-prob).
TokenComparison compare_token_topk(const int32_t* base_ids, const float* base_logp, int k, float base_target_logp,
                                   const float* model_logits, int64_t vocab, int32_t target);

struct KlSummary {
  int64_t n = 0;
  Estimate kld;        // mean with stderr and bootstrap interval
  double kld_median = 0, kld_p90 = 0, kld_p99 = 0, kld_p999 = 0, kld_max = 0;
  Estimate top1;       // agreement (fraction)
  Estimate delta_p;    // mean p_model - p_base of the correct token
  double rms_delta_p = 0;
  double ppl_base = 0, ppl_model = 0;
};
KlSummary summarize_kl(const std::vector<TokenComparison>& tokens, const BootstrapOptions& boot);

// A saved base: per scored position (in window order), the top-k of the base.
struct BaseLogits {
  int k = 0;
  int64_t vocab = 0;
  std::vector<int32_t> text_tokens;  // [N] the tokenized text (identity check)
  std::vector<int32_t> targets;      // [P] the correct token of each scored position
  std::vector<int32_t> topk_ids;     // [P, k]
  std::vector<float> topk_logp;      // [P, k]
  std::vector<float> target_logp;    // [P]
  std::map<std::string, std::string> meta;  // data_sha256, ctx, bos, stride, limit_windows, base model, ...
  int64_t positions() const { return static_cast<int64_t>(targets.size()); }
};
Status save_base_logits(const std::filesystem::path& path, const BaseLogits& base);
Result<BaseLogits> load_base_logits(const std::filesystem::path& path);
// The settings that must agree between a saved base and a run (the keys of `meta` they fill).
std::map<std::string, std::string> kl_settings_meta(const PerplexityOptions& opts, const std::string& data_sha256);

struct KlOptions {
  PerplexityOptions ppl;    // ctx, bos, stride, limit_windows, batch, quiet
  int save_topk = 0;        // > 0: fill `save` with the base's top-k (the model's when there is no base)
};

struct KlRun {
  std::vector<TokenComparison> tokens;  // empty when only saving
  int64_t windows = 0;
  double seconds = 0;
};

// Compares `model` to `base_model` (exact, full logits) or to `base_saved` (top-k), or, with neither,
// only records `model`'s top-k into `save` (the base of later runs). `save` may be null.
Result<KlRun> evaluate_kl(Model& model, Model* base_model, const BaseLogits* base_saved,
                          const std::vector<int32_t>& tokens, int32_t bos_id, const KlOptions& opts, BaseLogits* save);

}  // namespace compactor
