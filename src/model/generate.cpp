#include "model/generate.h"

#include <algorithm>
#include <chrono>

namespace compactor {

namespace {
double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}
}  // namespace

Result<GenerateResult> generate(Model& model, const std::vector<int32_t>& prompt, const GenerateOptions& opts,
                                const std::function<void(int32_t)>& on_token) {
  if (prompt.empty()) return invalid_argument("generate: the prompt has no tokens");
  if (opts.max_tokens < 0) return invalid_argument("--max-tokens must be >= 0 (got {})", opts.max_tokens);
  const int64_t max_pos = model.config().max_position_embeddings;
  if (static_cast<int64_t>(prompt.size()) > max_pos)
    return invalid_argument("generate: the prompt has {} tokens, more than the model's maximum {}", prompt.size(), max_pos);
  const int capacity = static_cast<int>(std::min<int64_t>(max_pos, static_cast<int64_t>(prompt.size()) + opts.max_tokens));
  KvCache cache = model.make_kv_cache(1, capacity);
  Sampler sampler(opts.sampling);
  const int64_t vocab = model.config().vocab_size;
  std::vector<float> logits(vocab);
  GenerateResult result;
  result.stop_reason = "max_tokens";

  auto t0 = std::chrono::steady_clock::now();
  ForwardRequest req{prompt.data(), BatchLayout{1, static_cast<int>(prompt.size())}, LogitsMode::kLast};
  ASSIGN_OR_RETURN(View out, model.forward(req, cache));
  copy_to_host_f32(model.backend(), out, logits.data());
  result.prefill_seconds = seconds_since(t0);

  auto t1 = std::chrono::steady_clock::now();
  for (int step = 0; step < opts.max_tokens; ++step) {
    int32_t id = sampler.sample(logits.data(), vocab);
    result.ids.push_back(id);
    if (on_token) on_token(id);
    const bool is_eos = std::find(opts.eos_ids.begin(), opts.eos_ids.end(), id) != opts.eos_ids.end();
    if (is_eos && opts.stop_at_eos == StopAtEos::kYes) { result.stop_reason = "eos"; break; }
    if (step + 1 == opts.max_tokens) break;
    if (cache.lengths[0] >= capacity) { result.stop_reason = "context"; break; }
    ForwardRequest next{&result.ids.back(), BatchLayout{1, 1}, LogitsMode::kLast};
    ASSIGN_OR_RETURN(View o, model.forward(next, cache));
    copy_to_host_f32(model.backend(), o, logits.data());
  }
  result.decode_seconds = seconds_since(t1);
  return result;
}

}  // namespace compactor
