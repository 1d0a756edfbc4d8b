#include "eval/loglikelihood.h"

#include <algorithm>
#include <numeric>

#include "core/progress.h"

namespace compactor {

namespace {

struct Batch {
  std::vector<size_t> items;  // request indices
  int ctx_tokens = 0;         // T of the context pass: max(L - 1)
  int cont_tokens = 0;        // T of the continuation pass: max continuation length
  int sequences = 0;          // choices in the batch
};

int prefix_len(const LoglikRequest& r) { return static_cast<int>(r.context.size()) - 1; }
int max_cont(const LoglikRequest& r) {
  size_t m = 0;
  for (const auto& c : r.continuations) m = std::max(m, c.size());
  return static_cast<int>(m);
}

// Greedy batches over requests sorted by context length (longest first, as lm-eval sorts).
std::vector<Batch> plan_batches(const std::vector<LoglikRequest>& reqs, const LoglikOptions& opts, int64_t max_pos) {
  std::vector<size_t> order(reqs.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return reqs[a].context.size() > reqs[b].context.size(); });
  std::vector<Batch> batches;
  Batch cur;
  int max_past = 0;
  for (size_t i : order) {
    const LoglikRequest& r = reqs[i];
    const int seqs = cur.sequences + static_cast<int>(r.continuations.size());
    const int ctx_t = std::max(cur.ctx_tokens, prefix_len(r));
    const int cont_t = std::max(cur.cont_tokens, max_cont(r));
    const int past = std::max(max_past, prefix_len(r));
    const bool fits = static_cast<int64_t>(cur.items.size() + 1) * ctx_t <= opts.max_tokens &&
                      static_cast<int64_t>(seqs) * cont_t <= opts.max_tokens && seqs <= opts.max_sequences &&
                      past + cont_t <= max_pos;
    if (!cur.items.empty() && !fits) {
      batches.push_back(std::move(cur));
      cur = Batch{};
      max_past = 0;
    }
    cur.items.push_back(i);
    cur.sequences += static_cast<int>(r.continuations.size());
    cur.ctx_tokens = std::max(cur.ctx_tokens, prefix_len(r));
    cur.cont_tokens = std::max(cur.cont_tokens, max_cont(r));
    max_past = std::max(max_past, prefix_len(r));
  }
  if (!cur.items.empty()) batches.push_back(std::move(cur));
  return batches;
}

// Runs every item's context minus its last token through the model: returns the filled cache.
Result<KvCache> context_pass(Model& model, const std::vector<LoglikRequest>& reqs, const Batch& b) {
  const int n = static_cast<int>(b.items.size());
  KvCache cache = model.make_kv_cache(n, std::max(1, b.ctx_tokens));
  if (b.ctx_tokens == 0) return cache;
  std::vector<int32_t> ids(static_cast<size_t>(n) * b.ctx_tokens);
  for (int i = 0; i < n; ++i) {
    const auto& ctx = reqs[b.items[i]].context;
    for (int t = 0; t < b.ctx_tokens; ++t) ids[i * b.ctx_tokens + t] = ctx[std::min<size_t>(t, ctx.size() - 1)];
  }
  ASSIGN_OR_RETURN(View unused, model.forward({ids.data(), BatchLayout{n, b.ctx_tokens}, LogitsMode::kNone}, cache));
  (void)unused;
  return cache;
}

// One sequence per choice, its cache rows copied from its item's context sequence.
KvCache expand_cache(Model& model, const std::vector<LoglikRequest>& reqs, const Batch& b, const KvCache& ctx) {
  int max_past = 0;
  for (size_t i : b.items) max_past = std::max(max_past, prefix_len(reqs[i]));
  KvCache cache = model.make_kv_cache(b.sequences, max_past + b.cont_tokens);
  Backend& be = model.backend();
  int s = 0;
  for (size_t k = 0; k < b.items.size(); ++k) {
    const LoglikRequest& r = reqs[b.items[k]];
    const int past = prefix_len(r);
    for (size_t c = 0; c < r.continuations.size(); ++c, ++s) {
      cache.lengths[s] = past;
      if (past == 0) continue;
      for (size_t l = 0; l < cache.k.size(); ++l) {
        for (int kv = 0; kv < 2; ++kv) {
          const Tensor& src_t = kv == 0 ? ctx.k[l] : ctx.v[l];
          const Tensor& dst_t = kv == 0 ? cache.k[l] : cache.v[l];
          const int64_t dim = src_t.shape()[2];
          View src = src_t.view().reshaped(Shape{ctx.batch * static_cast<int64_t>(ctx.capacity), dim});
          View dst = dst_t.view().reshaped(Shape{cache.batch * static_cast<int64_t>(cache.capacity), dim});
          be.copy(dst.row_slice(static_cast<int64_t>(s) * cache.capacity, past),
                  src.row_slice(static_cast<int64_t>(k) * ctx.capacity, past));
        }
      }
    }
  }
  return cache;
}

// Scores every continuation of the batch; fills out[item][choice].
Status continuation_pass(Model& model, const std::vector<LoglikRequest>& reqs, const Batch& b, KvCache& cache,
                         std::vector<std::vector<double>>& out) {
  const int T = b.cont_tokens;
  const size_t rows = static_cast<size_t>(b.sequences) * T;
  std::vector<int32_t> ids(rows), targets(rows, 0);
  std::vector<uint8_t> scored(rows, 0);
  int s = 0;
  for (size_t i : b.items) {
    const LoglikRequest& r = reqs[i];
    for (const auto& cont : r.continuations) {
      const size_t base = static_cast<size_t>(s++) * T;
      for (int t = 0; t < T; ++t) {
        const bool real = t < static_cast<int>(cont.size());
        ids[base + t] = t == 0 ? r.context.back() : cont[std::min<size_t>(t - 1, cont.size() - 1)];
        targets[base + t] = real ? cont[t] : 0;
        scored[base + t] = real;
      }
    }
  }
  ASSIGN_OR_RETURN(View logits, model.forward({ids.data(), BatchLayout{b.sequences, T}, LogitsMode::kAll}, cache));
  std::vector<float> nll(rows);
  model.backend().cross_entropy(nll.data(), logits, targets.data());
  s = 0;
  for (size_t i : b.items) {
    out[i].assign(reqs[i].continuations.size(), 0.0);
    for (size_t c = 0; c < reqs[i].continuations.size(); ++c, ++s) {
      double ll = 0;
      for (int t = 0; t < T; ++t)
        if (scored[static_cast<size_t>(s) * T + t]) ll -= nll[static_cast<size_t>(s) * T + t];
      out[i][c] = ll;
    }
  }
  return Status::ok();
}

Status check_request(const LoglikRequest& r, size_t index, int64_t max_pos) {
  if (r.context.empty()) return invalid_argument("loglikelihood request {}: empty context", index);
  if (r.continuations.empty()) return invalid_argument("loglikelihood request {}: no continuations", index);
  for (const auto& c : r.continuations)
    if (c.empty()) return invalid_argument("loglikelihood request {}: empty continuation", index);
  if (prefix_len(r) + max_cont(r) > max_pos)
    return invalid_argument("loglikelihood request {}: {} context + {} continuation tokens exceed the model's {} positions",
                            index, r.context.size(), max_cont(r), max_pos);
  return Status::ok();
}

}  // namespace

Result<std::vector<std::vector<double>>> score_loglikelihoods(Model& model, const std::vector<LoglikRequest>& requests,
                                                              const LoglikOptions& opts, LoglikStats* stats) {
  const int64_t max_pos = model.config().max_position_embeddings;
  for (size_t i = 0; i < requests.size(); ++i) RETURN_IF_ERROR(check_request(requests[i], i, max_pos));
  std::vector<std::vector<double>> out(requests.size());
  const std::vector<Batch> batches = plan_batches(requests, opts, max_pos);
  Progress progress(opts.label, static_cast<int64_t>(requests.size()), opts.quiet);
  int64_t done = 0;
  LoglikStats local;
  for (const Batch& b : batches) {
    ASSIGN_OR_RETURN(KvCache ctx, context_pass(model, requests, b));
    KvCache cache = expand_cache(model, requests, b, ctx);
    ctx = KvCache{};  // frees the context cache before the continuation pass allocates activations
    RETURN_IF_ERROR(continuation_pass(model, requests, b, cache, out));
    local.forward_passes += b.ctx_tokens > 0 ? 2 : 1;
    local.context_tokens += static_cast<int64_t>(b.items.size()) * b.ctx_tokens;
    local.continuation_tokens += static_cast<int64_t>(b.sequences) * b.cont_tokens;
    done += static_cast<int64_t>(b.items.size());
    progress.update(done);
  }
  progress.finish();
  if (stats) *stats = local;
  return out;
}

}  // namespace compactor
