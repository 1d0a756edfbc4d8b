// The multiple-choice scoring path on real models: for a few items of every shipped task, the
// per-choice log-likelihoods of the harness (shared context, KV copies, deduplicated choice
// sequences, right padding, batches of items) equal Σ log-softmax of the model's logits computed
// here independently, one whole context+continuation sequence at a time. Also checks lm-eval's
// tokenization rule (continuation = tokens of context+continuation after the context's) and that
// batching does not change a score.
// Run: build-*/tests/test_mc_scoring   (stories260K and fixture-llama-sp; ~30 s on 2 cores)
#include <gtest/gtest.h>

#include <cmath>

#include "eval/kl_divergence.h"
#include "eval/multiple_choice.h"
#include "eval/stats.h"
#include "support/fixtures.h"

namespace compactor {
namespace {

struct Loaded {
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tok;
};

Loaded load(const std::string& name) {
  Loaded l;
  l.backend = std::move(make_backend(BackendKind::kCpu)).value();
  auto m = Model::load(test::model_dir(name), *l.backend);
  EXPECT_TRUE(m.is_ok()) << m.status().message();
  l.model = std::move(*m);
  auto t = load_tokenizer(test::model_dir(name));
  EXPECT_TRUE(t.is_ok()) << t.status().message();
  l.tok = std::move(*t);
  return l;
}

TaskInstance items_of(const std::string& task, int64_t limit) {
  auto spec = load_task_spec(test::source_dir() / "configs/tasks" / (task + ".yaml"));
  EXPECT_TRUE(spec.is_ok()) << spec.status().message();
  TaskBuildOptions o;
  o.data_dir = test::shared_dir() / "data";
  o.limit = limit;
  auto t = build_task(*spec, o);
  EXPECT_TRUE(t.is_ok()) << t.status().message();
  return std::move(*t);
}

// Σ log p(cont | ctx) from one forward of ctx + cont, with log-softmax computed here.
double reference_loglik(Model& model, const std::vector<int32_t>& ctx, const std::vector<int32_t>& cont) {
  std::vector<int32_t> ids = ctx;
  ids.insert(ids.end(), cont.begin(), cont.end() - 1);
  const int n = static_cast<int>(ids.size());
  KvCache cache = model.make_kv_cache(1, n);
  auto logits = model.forward({ids.data(), BatchLayout{1, n}, LogitsMode::kAll}, cache);
  EXPECT_TRUE(logits.is_ok()) << logits.status().message();
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

// Returns the context tokens run with shared prefixes.
int64_t check_task(Loaded& l, const std::string& task, int64_t limit, size_t max_items) {
  TaskInstance t = items_of(task, limit);
  if (t.items.size() > max_items) t.items.resize(max_items);
  McTokenizeOptions topts;
  topts.max_length = l.model->config().max_position_embeddings;
  std::vector<LoglikRequest> reqs;
  for (const McItem& item : t.items) {
    auto r = tokenize_item(*l.tok, item, topts);
    EXPECT_TRUE(r.is_ok()) << r.status().message();
    if (!r.is_ok()) return -1;
    reqs.push_back(std::move(*r));
  }
  LoglikOptions small;
  small.max_tokens = 96;  // several batches, and items split across them
  small.min_shared_prefix = 0;  // every context computed in full
  LoglikStats sa, sb;
  auto a = score_loglikelihoods(*l.model, reqs, small, &sa);
  EXPECT_TRUE(a.is_ok()) << a.status().message();
  if (!a.is_ok()) return -1;
  auto b = score_loglikelihoods(*l.model, reqs, LoglikOptions{}, &sb);  // shared prefixes run once
  EXPECT_TRUE(b.is_ok()) << b.status().message();
  if (!b.is_ok()) return -1;
  double worst = 0;
  for (size_t i = 0; i < reqs.size(); ++i) {
    EXPECT_EQ((*a)[i].size(), t.items[i].continuations.size());
    for (size_t c = 0; c < reqs[i].continuations.size(); ++c) {
      const double ref = reference_loglik(*l.model, reqs[i].context, reqs[i].continuations[c]);
      EXPECT_NEAR((*a)[i][c], ref, 2e-3 + 1e-4 * std::fabs(ref)) << task << " item " << i << " choice " << c;
      EXPECT_NEAR((*b)[i][c], (*a)[i][c], 2e-3 + 1e-4 * std::fabs(ref)) << task << " batching changed a score";
      worst = std::max(worst, std::fabs((*a)[i][c] - ref));
    }
  }
  std::printf("[%s] %s: %zu items, max |harness - reference| = %.2e, context tokens %lld (%lld with shared prefixes)\n",
              l.model->config().model_type.c_str(), task.c_str(), reqs.size(), worst,
              static_cast<long long>(sa.context_tokens), static_cast<long long>(sb.context_tokens));
  return sb.context_tokens;
}

TEST(McScoring, TokenizationFollowsLmEval) {
  Loaded l = load("fixture-llama-sp");
  McItem item;
  item.location = "test";
  item.context = "Question: Which is bigger?\nAnswer: ";  // the trailing space moves to the continuation
  item.continuations = {"The sun.", " the moon"};
  auto r = tokenize_item(*l.tok, item, {});
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  const auto ctx = l.tok->encode("Question: Which is bigger?\nAnswer:", false);
  EXPECT_EQ(r->context, ctx);
  for (size_t c = 0; c < 2; ++c) {
    const auto whole = l.tok->encode("Question: Which is bigger?\nAnswer: " + item.continuations[c], false);
    EXPECT_EQ(r->continuations[c], std::vector<int32_t>(whole.begin() + ctx.size(), whole.end()));
  }
  McTokenizeOptions bos;
  bos.add_bos = true;
  auto rb = tokenize_item(*l.tok, item, bos);
  ASSERT_TRUE(rb.is_ok());
  EXPECT_EQ(rb->context.front(), l.tok->bos_id());
  EXPECT_EQ(rb->continuations, r->continuations);
  McTokenizeOptions tiny;
  tiny.max_length = 6;  // left truncation keeps the last tokens
  bool cut = false;
  auto rt = tokenize_item(*l.tok, item, tiny, &cut);
  ASSERT_TRUE(rt.is_ok());
  EXPECT_TRUE(cut);
  size_t longest = 0;
  for (const auto& c : rt->continuations) longest = std::max(longest, c.size());
  EXPECT_EQ(rt->context.size() + longest - 1, 6u);
  EXPECT_EQ(rt->context.back(), ctx.back());
}

TEST(McScoring, Stories260kAllTasks) {
  Loaded l = load("stories260K");
  for (const char* task : {"arc_easy", "arc_challenge", "hellaswag", "boolq", "truthfulqa_mc1", "truthfulqa_mc2"})
    check_task(l, task, 3, 3);
  check_task(l, "mmlu", 1, 3);  // 5-shot prompts beyond 512 positions: the truncation path
}

TEST(McScoring, FixtureSpAllTasks) {
  Loaded l = load("fixture-llama-sp");
  for (const char* task : {"arc_easy", "arc_challenge", "hellaswag", "boolq"}) check_task(l, task, 2, 2);
  // Three abstract_algebra items share the description and 5 shots; TruthfulQA items its preamble.
  const int64_t mmlu_ctx = check_task(l, "mmlu", 3, 3);
  TaskInstance mmlu = items_of("mmlu", 3);
  int64_t full = 0;
  for (size_t i = 0; i < 3; ++i) full += static_cast<int64_t>(l.tok->encode(mmlu.items[i].context, false).size()) - 1;
  EXPECT_LT(mmlu_ctx, full / 2) << "the 5-shot prefix should run once for the three items";
  check_task(l, "truthfulqa_mc2", 2, 2);
}

// Synthetic requests built to hit every path at once: a shared 80-token prefix on half the items,
// single-token choices sharing one sequence, a choice with the same input as another, many batches.
TEST(McScoring, SyntheticPathsMatchWholeSequences) {
  Loaded l = load("stories260K");
  SplitMix64 rng(7);
  auto tok = [&]() { return static_cast<int32_t>(3 + rng.below(500)); };
  std::vector<int32_t> prefix(80);
  for (auto& t : prefix) t = tok();
  std::vector<LoglikRequest> reqs(16);
  for (size_t i = 0; i < reqs.size(); ++i) {
    if (i % 2 == 0) reqs[i].context = prefix;
    for (size_t t = 0, own = 1 + rng.below(40); t < own; ++t) reqs[i].context.push_back(tok());
    for (int c = 0; c < 4; ++c) {
      std::vector<int32_t> cont(i % 4 == 1 ? 1 : 1 + rng.below(8));
      for (auto& t : cont) t = tok();
      if (c == 3 && i % 4 != 1) {
        cont = reqs[i].continuations[0];
        cont.back() = tok();
      }
      reqs[i].continuations.push_back(std::move(cont));
    }
  }
  LoglikOptions small;
  small.max_tokens = 128;
  LoglikStats stats;
  auto got = score_loglikelihoods(*l.model, reqs, small, &stats);
  ASSERT_TRUE(got.is_ok()) << got.status().message();
  for (size_t i = 0; i < reqs.size(); ++i)
    for (size_t c = 0; c < 4; ++c) {
      const double ref = reference_loglik(*l.model, reqs[i].context, reqs[i].continuations[c]);
      EXPECT_NEAR((*got)[i][c], ref, 1e-3 + 1e-4 * std::fabs(ref)) << "item " << i << " choice " << c;
    }
  int64_t full = 0;
  for (const auto& r : reqs) full += static_cast<int64_t>(r.context.size()) - 1;
  EXPECT_LT(stats.context_tokens, full) << "the 80-token prefix runs once";
}

TEST(McScoring, RunMultipleChoiceScoresAgreeWithLogliks) {
  Loaded l = load("stories260K");
  TaskInstance t = items_of("arc_easy", 6);
  auto spec = load_task_spec(test::source_dir() / "configs/tasks/arc_easy.yaml");
  auto run = run_multiple_choice(*l.model, *l.tok, t, spec->metrics, {});
  ASSERT_TRUE(run.is_ok()) << run.status().message();
  ASSERT_EQ(run->scores.acc.size(), 6u);
  for (size_t i = 0; i < 6; ++i) {
    EXPECT_EQ(run->scores.acc[i], argmax_first(run->loglik[i]) == t.items[i].gold ? 1.0 : 0.0);
    std::vector<double> norm;
    for (size_t c = 0; c < run->loglik[i].size(); ++c)
      norm.push_back(run->loglik[i][c] / static_cast<double>(t.items[i].choice_bytes[c]));
    EXPECT_EQ(run->scores.acc_norm[i], argmax_first(norm) == t.items[i].gold ? 1.0 : 0.0);
  }
}

}  // namespace
}  // namespace compactor
