#include "eval/loglikelihood.h"

#include <algorithm>
#include <numeric>

#include "core/progress.h"

namespace compactor {

namespace {

// Choices of one item whose model inputs are equal (same cont[0..n-2], e.g. all single-token
// answers " A".." D") share one sequence of the continuation pass; their targets differ.
struct Sequence {
  size_t item = 0;
  std::vector<size_t> choices;
};

struct Batch {
  std::vector<size_t> items;  // request indices
  int group = -1;             // prefix group (-1: none)
  int shared = 0;             // leading context tokens every item of the group shares
  int ctx_tokens = 0;         // T of the context pass: max(L - 1 - shared)
  int cont_tokens = 0;        // T of the continuation pass: max continuation length
  std::vector<Sequence> sequences;
};

// Sequences of one continuation pass: similar lengths, so little padding.
struct Chunk {
  std::vector<Sequence> sequences;
  int cont_tokens = 0;
};

// The item's choices grouped by equal inputs.
std::vector<Sequence> sequences_of(const LoglikRequest& r, size_t item) {
  std::vector<Sequence> out;
  for (size_t c = 0; c < r.continuations.size(); ++c) {
    const auto& cont = r.continuations[c];
    auto same_input = [&](const Sequence& s) {
      const auto& other = r.continuations[s.choices[0]];
      return other.size() == cont.size() && std::equal(cont.begin(), cont.end() - 1, other.begin());
    };
    auto it = std::find_if(out.begin(), out.end(), same_input);
    if (it == out.end()) out.push_back({item, {c}});
    else it->choices.push_back(c);
  }
  return out;
}

int prefix_len(const LoglikRequest& r) { return static_cast<int>(r.context.size()) - 1; }
int max_cont(const LoglikRequest& r) {
  size_t m = 0;
  for (const auto& c : r.continuations) m = std::max(m, c.size());
  return static_cast<int>(m);
}

// Items whose contexts share a long token prefix (few-shot examples, a preamble): found as runs of
// neighbours in lexicographic order whose common prefix is at least `min_shared` tokens.
struct PrefixGroup {
  std::vector<size_t> items;
  int shared = 0;
};

size_t common_prefix(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  return static_cast<size_t>(std::mismatch(a.begin(), a.begin() + std::min(a.size(), b.size()), b.begin()).first - a.begin());
}

std::vector<PrefixGroup> prefix_groups(const std::vector<LoglikRequest>& reqs, int min_shared) {
  std::vector<size_t> order(reqs.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return reqs[a].context < reqs[b].context; });
  std::vector<PrefixGroup> groups;
  for (size_t k = 0; k < order.size(); ++k) {
    const size_t i = order[k];
    const int lcp = k == 0 ? 0 : static_cast<int>(common_prefix(reqs[order[k - 1]].context, reqs[i].context));
    if (groups.empty() || min_shared <= 0 || lcp < min_shared) groups.push_back({{}, prefix_len(reqs[i])});
    PrefixGroup& g = groups.back();
    // The last context token of every item stays out of the shared part (the continuation pass feeds it).
    g.shared = std::min({g.shared, prefix_len(reqs[i]), g.items.empty() ? prefix_len(reqs[i]) : lcp});
    g.items.push_back(i);
  }
  for (PrefixGroup& g : groups)
    if (g.items.size() < 2 || g.shared < min_shared) g.shared = 0;
  return groups;
}

// Greedy batches over items sorted by context length (longest first, as lm-eval sorts); items of
// one prefix group are batched together, the others in one pool.
std::vector<Batch> plan_batches(const std::vector<LoglikRequest>& reqs, const LoglikOptions& opts, int64_t max_pos) {
  std::vector<PrefixGroup> groups = prefix_groups(reqs, opts.min_shared_prefix);
  PrefixGroup pool;
  std::vector<Batch> batches;
  auto plan_group = [&](PrefixGroup& g, int group_id) {
    std::stable_sort(g.items.begin(), g.items.end(),
                     [&](size_t a, size_t b) { return reqs[a].context.size() > reqs[b].context.size(); });
    Batch cur{{}, group_id, g.shared};
    int max_past = 0;
    for (size_t i : g.items) {
      const LoglikRequest& r = reqs[i];
      std::vector<Sequence> seqs = sequences_of(r, i);
      const int64_t n = static_cast<int64_t>(cur.items.size()) + 1;
      const int own = std::max(cur.ctx_tokens, prefix_len(r) - g.shared);
      const int cont_t = std::max(cur.cont_tokens, max_cont(r));
      const int past = std::max(max_past, prefix_len(r));
      const bool fits = n * own <= opts.max_tokens && n * (g.shared + own) <= opts.max_cache_tokens &&
                        static_cast<int64_t>(cur.sequences.size() + seqs.size()) <= opts.max_sequences &&
                        past + cont_t <= max_pos;
      if (!cur.items.empty() && !fits) {
        batches.push_back(std::move(cur));
        cur = Batch{{}, group_id, g.shared};
        max_past = 0;
      }
      cur.items.push_back(i);
      cur.sequences.insert(cur.sequences.end(), seqs.begin(), seqs.end());
      cur.ctx_tokens = std::max(cur.ctx_tokens, prefix_len(r) - g.shared);
      cur.cont_tokens = std::max(cur.cont_tokens, max_cont(r));
      max_past = std::max(max_past, prefix_len(r));
    }
    if (!cur.items.empty()) batches.push_back(std::move(cur));
  };
  for (size_t gi = 0; gi < groups.size(); ++gi) {
    if (groups[gi].shared > 0) plan_group(groups[gi], static_cast<int>(gi));
    else pool.items.insert(pool.items.end(), groups[gi].items.begin(), groups[gi].items.end());
  }
  if (!pool.items.empty()) plan_group(pool, -1);
  return batches;
}

int input_len(const std::vector<LoglikRequest>& reqs, const Sequence& s) {
  return static_cast<int>(reqs[s.item].continuations[s.choices[0]].size());
}

// Splits a batch's sequences, sorted by length, into continuation passes that stay within the
// token budget and waste at most about a quarter of their rows on padding.
std::vector<Chunk> chunk_sequences(const std::vector<LoglikRequest>& reqs, const Batch& b, const LoglikOptions& opts) {
  std::vector<Sequence> seqs = b.sequences;
  std::stable_sort(seqs.begin(), seqs.end(),
                   [&](const Sequence& x, const Sequence& y) { return input_len(reqs, x) < input_len(reqs, y); });
  std::vector<Chunk> chunks;
  Chunk cur;
  int64_t real = 0;
  int max_past = 0;
  for (const Sequence& s : seqs) {
    const int len = input_len(reqs, s);
    const int past = std::max(max_past, prefix_len(reqs[s.item]));
    const int64_t n = static_cast<int64_t>(cur.sequences.size()) + 1;
    const bool over = n * len > opts.max_tokens || n > opts.max_sequences || n * (past + len) > opts.max_cache_tokens ||
                      (n > 8 && 4 * (real + len) < 3 * n * len);
    if (!cur.sequences.empty() && over) {
      chunks.push_back(std::move(cur));
      cur = Chunk{};
      real = 0;
    }
    cur.sequences.push_back(s);
    cur.cont_tokens = std::max(cur.cont_tokens, len);
    max_past = cur.sequences.size() == 1 ? prefix_len(reqs[s.item]) : past;
    real += len;
  }
  if (!cur.sequences.empty()) chunks.push_back(std::move(cur));
  return chunks;
}

// Copies rows [0, n) of sequence `src_seq` of `src` to sequence `dst_seq` of `dst`, every layer.
void copy_cache_rows(Backend& be, const KvCache& src, int64_t src_seq, KvCache& dst, int64_t dst_seq, int n) {
  for (size_t l = 0; l < dst.k.size(); ++l) {
    for (int kv = 0; kv < 2; ++kv) {
      const Tensor& s = kv == 0 ? src.k[l] : src.v[l];
      const Tensor& d = kv == 0 ? dst.k[l] : dst.v[l];
      const int64_t dim = s.shape()[2];
      View sv = s.view().reshaped(Shape{src.batch * static_cast<int64_t>(src.capacity), dim});
      View dv = d.view().reshaped(Shape{dst.batch * static_cast<int64_t>(dst.capacity), dim});
      be.copy(dv.row_slice(dst_seq * dst.capacity, n), sv.row_slice(src_seq * src.capacity, n));
    }
  }
}

// The shared prefix of a group, run once: a cache of one sequence.
Result<KvCache> prefix_pass(Model& model, const std::vector<int32_t>& context, int shared) {
  KvCache cache = model.make_kv_cache(1, shared);
  std::vector<int32_t> ids(context.begin(), context.begin() + shared);
  ASSIGN_OR_RETURN(View unused, model.forward({ids.data(), BatchLayout{1, shared}, LogitsMode::kNone}, cache));
  (void)unused;
  return cache;
}

// Runs every item's context minus its last token (after the shared prefix, copied from `prefix`),
// one right-padded sequence per item; returns the filled cache.
Result<KvCache> context_pass(Model& model, const std::vector<LoglikRequest>& reqs, const Batch& b,
                             const KvCache* prefix) {
  const int n = static_cast<int>(b.items.size());
  KvCache cache = model.make_kv_cache(n, std::max(1, b.shared + b.ctx_tokens));
  for (int i = 0; i < n && b.shared > 0; ++i) {
    copy_cache_rows(model.backend(), *prefix, 0, cache, i, b.shared);
    cache.lengths[i] = b.shared;
  }
  if (b.ctx_tokens == 0) return cache;
  std::vector<int32_t> ids(static_cast<size_t>(n) * b.ctx_tokens);
  for (int i = 0; i < n; ++i) {
    const auto& ctx = reqs[b.items[i]].context;
    for (int t = 0; t < b.ctx_tokens; ++t)
      ids[i * b.ctx_tokens + t] = ctx[std::min<size_t>(b.shared + t, ctx.size() - 1)];
  }
  ASSIGN_OR_RETURN(View unused, model.forward({ids.data(), BatchLayout{n, b.ctx_tokens}, LogitsMode::kNone}, cache));
  (void)unused;
  return cache;
}

// One sequence per distinct choice input, its cache rows copied from its item's context sequence.
KvCache expand_cache(Model& model, const std::vector<LoglikRequest>& reqs, const Batch& b, const Chunk& chunk,
                     const KvCache& ctx) {
  int max_past = 0;
  for (const Sequence& s : chunk.sequences) max_past = std::max(max_past, prefix_len(reqs[s.item]));
  const int n_seqs = static_cast<int>(chunk.sequences.size());
  KvCache cache = model.make_kv_cache(n_seqs, max_past + chunk.cont_tokens);
  std::vector<int64_t> ctx_row(reqs.size(), -1);  // item -> its sequence in the context cache
  for (size_t k = 0; k < b.items.size(); ++k) ctx_row[b.items[k]] = static_cast<int64_t>(k);
  Backend& be = model.backend();
  for (int s = 0; s < n_seqs; ++s) {
    const size_t item = chunk.sequences[s].item;
    const int past = prefix_len(reqs[item]);
    cache.lengths[s] = past;
    if (past > 0) copy_cache_rows(be, ctx, ctx_row[item], cache, s, past);
  }
  return cache;
}

// Scores every continuation of the batch; fills out[item][choice]. Choices sharing a sequence are
// scored by separate cross-entropy calls over the same logits (one per "slot").
Status continuation_pass(Model& model, const std::vector<LoglikRequest>& reqs, const Chunk& chunk, KvCache& cache,
                         std::vector<std::vector<double>>& out) {
  const int T = chunk.cont_tokens;
  const int n_seqs = static_cast<int>(chunk.sequences.size());
  const size_t rows = static_cast<size_t>(n_seqs) * T;
  std::vector<int32_t> ids(rows);
  size_t slots = 0;
  for (int s = 0; s < n_seqs; ++s) {
    const Sequence& seq = chunk.sequences[s];
    const LoglikRequest& r = reqs[seq.item];
    const auto& cont = r.continuations[seq.choices[0]];
    slots = std::max(slots, seq.choices.size());
    for (int t = 0; t < T; ++t)
      ids[static_cast<size_t>(s) * T + t] = t == 0 ? r.context.back() : cont[std::min<size_t>(t - 1, cont.size() - 1)];
  }
  ASSIGN_OR_RETURN(View logits, model.forward({ids.data(), BatchLayout{n_seqs, T}, LogitsMode::kAll}, cache));
  std::vector<int32_t> targets(rows);
  std::vector<float> nll(rows);
  for (size_t slot = 0; slot < slots; ++slot) {
    std::fill(targets.begin(), targets.end(), 0);
    for (int s = 0; s < n_seqs; ++s) {
      const Sequence& seq = chunk.sequences[s];
      if (slot >= seq.choices.size()) continue;
      const auto& cont = reqs[seq.item].continuations[seq.choices[slot]];
      for (size_t t = 0; t < cont.size(); ++t) targets[static_cast<size_t>(s) * T + t] = cont[t];
    }
    model.backend().cross_entropy(nll.data(), logits, targets.data());
    for (int s = 0; s < n_seqs; ++s) {
      const Sequence& seq = chunk.sequences[s];
      if (slot >= seq.choices.size()) continue;
      const size_t n = reqs[seq.item].continuations[seq.choices[slot]].size();
      double ll = 0;
      for (size_t t = 0; t < n; ++t) ll -= nll[static_cast<size_t>(s) * T + t];
      out[seq.item][seq.choices[slot]] = ll;
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
  KvCache prefix;
  int prefix_group = -1;
  for (const Batch& b : batches) {
    if (b.shared > 0 && b.group != prefix_group) {  // batches of one group are consecutive
      ASSIGN_OR_RETURN(prefix, prefix_pass(model, requests[b.items[0]].context, b.shared));
      prefix_group = b.group;
      local.forward_passes += 1;
      local.context_tokens += b.shared;
    }
    ASSIGN_OR_RETURN(KvCache ctx, context_pass(model, requests, b, b.shared > 0 ? &prefix : nullptr));
    local.forward_passes += b.ctx_tokens > 0 ? 1 : 0;
    local.context_tokens += static_cast<int64_t>(b.items.size()) * b.ctx_tokens;
    for (size_t i : b.items) out[i].assign(requests[i].continuations.size(), 0.0);
    for (const Chunk& chunk : chunk_sequences(requests, b, opts)) {
      KvCache cache = expand_cache(model, requests, b, chunk, ctx);
      RETURN_IF_ERROR(continuation_pass(model, requests, chunk, cache, out));
      local.forward_passes += 1;
      local.continuation_tokens += static_cast<int64_t>(chunk.sequences.size()) * chunk.cont_tokens;
    }
    done += static_cast<int64_t>(b.items.size());
    progress.update(done);
  }
  progress.finish();
  if (stats) *stats = local;
  return out;
}

}  // namespace compactor
