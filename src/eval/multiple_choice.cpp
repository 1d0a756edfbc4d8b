#include "eval/multiple_choice.h"

#include <algorithm>
#include <chrono>
#include <cmath>

namespace compactor {

namespace {

size_t trailing_whitespace(const std::string& s) {
  const size_t keep = s.find_last_not_of(" \t\n\r\v\f");
  return keep == std::string::npos ? s.size() : s.size() - keep - 1;
}

// The items' scores of one group (all items when the task has one group).
std::vector<std::vector<double>> split_groups(const TaskInstance& task, const std::vector<double>& scores) {
  std::vector<std::vector<double>> out;
  for (const TaskGroup& g : task.groups)
    out.emplace_back(scores.begin() + g.first_item, scores.begin() + g.first_item + g.items);
  return out;
}

}  // namespace

Result<LoglikRequest> tokenize_item(const Tokenizer& tok, const McItem& item, const McTokenizeOptions& opts,
                                    bool* truncated) {
  const size_t n_spaces = trailing_whitespace(item.context);
  const std::string context = item.context.substr(0, item.context.size() - n_spaces);
  const std::string moved = item.context.substr(context.size());
  LoglikRequest req;
  req.context = tok.encode(context, opts.add_bos);
  const size_t ctx_len = req.context.size();
  if (req.context.empty()) {
    if (tok.bos_id() < 0) return invalid_argument("{}: the context is empty and the tokenizer has no BOS", item.location);
    req.context.push_back(tok.bos_id());  // lm-eval's prefix token for an empty context
  }
  size_t longest = 0;
  for (size_t c = 0; c < item.continuations.size(); ++c) {
    std::vector<int32_t> whole = tok.encode(context + moved + item.continuations[c], opts.add_bos);
    if (whole.size() <= ctx_len)
      return invalid_argument("{}: choice {} (\"{}\") adds no tokens after the context", item.location, c,
                              item.continuations[c]);
    req.continuations.emplace_back(whole.begin() + static_cast<std::ptrdiff_t>(ctx_len), whole.end());
    longest = std::max(longest, req.continuations.back().size());
  }
  if (truncated) *truncated = false;
  // lm-eval feeds (context + continuation)[-(max_length + 1):][:-1]: inputs of at most max_length.
  if (opts.max_length > 0 && static_cast<int64_t>(req.context.size() + longest) - 1 > opts.max_length) {
    const int64_t drop = static_cast<int64_t>(req.context.size() + longest) - 1 - opts.max_length;
    if (drop >= static_cast<int64_t>(req.context.size()))
      return invalid_argument("{}: a continuation of {} tokens does not fit the model's {} positions", item.location,
                              longest, opts.max_length);
    req.context.erase(req.context.begin(), req.context.begin() + drop);
    if (truncated) *truncated = true;
  }
  return req;
}

int argmax_first(const std::vector<double>& v) {
  return static_cast<int>(std::max_element(v.begin(), v.end()) - v.begin());  // first of equal maxima
}

double mc2_score(const std::vector<double>& loglik, const std::vector<uint8_t>& true_mask) {
  COMPACTOR_ASSERT(loglik.size() == true_mask.size(), "mc2: {} log-likelihoods for {} labels", loglik.size(),
                   true_mask.size());
  const double m = *std::max_element(loglik.begin(), loglik.end());
  double p_true = 0, p_all = 0;
  for (size_t i = 0; i < loglik.size(); ++i) {
    const double p = std::exp(loglik[i] - m);  // the common factor exp(m) cancels in the ratio
    p_all += p;
    if (true_mask[i]) p_true += p;
  }
  return p_true / p_all;
}

McScores score_items(const std::vector<McItem>& items, const std::vector<std::vector<double>>& loglik,
                     const std::vector<McMetric>& metrics) {
  COMPACTOR_ASSERT(items.size() == loglik.size(), "{} items but {} log-likelihood rows", items.size(), loglik.size());
  auto wants = [&](McMetric m) { return std::find(metrics.begin(), metrics.end(), m) != metrics.end(); };
  McScores s;
  for (size_t i = 0; i < items.size(); ++i) {
    const McItem& it = items[i];
    const std::vector<double>& ll = loglik[i];
    if (wants(McMetric::kAcc)) s.acc.push_back(argmax_first(ll) == it.gold ? 1.0 : 0.0);
    if (wants(McMetric::kAccNorm)) {
      std::vector<double> norm(ll.size());
      for (size_t c = 0; c < ll.size(); ++c) norm[c] = ll[c] / static_cast<double>(it.choice_bytes[c]);
      s.acc_norm.push_back(argmax_first(norm) == it.gold ? 1.0 : 0.0);
    }
    if (wants(McMetric::kMc2)) s.mc2.push_back(mc2_score(ll, it.gold_mask));
  }
  return s;
}

Result<McRun> run_multiple_choice(Model& model, const Tokenizer& tok, const TaskInstance& task,
                                  const std::vector<McMetric>& metrics, const McRunOptions& opts) {
  const auto t0 = std::chrono::steady_clock::now();
  McRun run;
  std::vector<LoglikRequest> reqs;
  reqs.reserve(task.items.size());
  McTokenizeOptions topts = opts.tokenize;
  if (topts.max_length <= 0) topts.max_length = model.config().max_position_embeddings;
  for (const McItem& item : task.items) {
    bool cut = false;
    ASSIGN_OR_RETURN(LoglikRequest r, tokenize_item(tok, item, topts, &cut));
    run.truncated += cut ? 1 : 0;
    reqs.push_back(std::move(r));
  }
  LoglikOptions lopts = opts.loglik;
  lopts.label = task.name;
  ASSIGN_OR_RETURN(run.loglik, score_loglikelihoods(model, reqs, lopts, &run.stats));
  run.scores = score_items(task.items, run.loglik, metrics);
  run.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return run;
}

nlohmann::json estimate_json(const Estimate& e) {
  auto num = [](double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); };
  return {{"value", num(e.value)}, {"stderr", num(e.stderr_)}, {"ci95", {num(e.ci_low), num(e.ci_high)}}};
}

nlohmann::json summarize_task(const TaskInstance& task, const std::vector<McMetric>& metrics, const McScores& scores,
                              const McScores* base, const BootstrapOptions& boot) {
  nlohmann::json j = {{"task", task.name}, {"split", task.split}, {"n", task.items.size()}, {"shots", task.shots}};
  const bool grouped = task.groups.size() > 1;
  if (grouped) j["groups"] = nlohmann::json::object();
  for (McMetric m : metrics) {
    const std::string name = mc_metric_name(m);
    const std::vector<double>& s = scores.of(m);
    j[name] = estimate_json(estimate_mean(s, boot));
    const auto groups = split_groups(task, s);
    if (grouped) {
      j[name + "_macro"] = estimate_json(estimate_macro_mean(groups, boot));
      for (size_t g = 0; g < task.groups.size(); ++g) {
        auto& gj = j["groups"][task.groups[g].name];
        gj["n"] = groups[g].size();
        gj[name] = estimate_json(estimate_mean(groups[g], boot));
      }
    }
    if (base) {
      const std::vector<double>& b = base->of(m);
      j["base"][name] = estimate_json(estimate_mean(b, boot));
      j["delta"][name] = estimate_json(estimate_paired_difference(s, b, boot));
      if (grouped)
        j["delta"][name + "_macro"] =
            estimate_json(estimate_macro_paired_difference(groups, split_groups(task, b), boot));
    }
  }
  return j;
}

}  // namespace compactor
