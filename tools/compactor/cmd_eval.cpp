// compactor eval MODEL --tasks ppl[:DATASET] --data FILE --ctx N [--no-bos] [--stride S]
// [--limit-windows K] [--json]: perplexity with the docs/VERIFY.md convention, recorded in the
// run store with the data file's hash and every setting that changes the number.
#include <cmath>
#include <cstdio>

#include "common.h"
#include "core/progress.h"
#include "datasets.h"
#include "eval/perplexity.h"
#include "io/text_file.h"

namespace compactor::cli {

namespace {
struct EvalOptions {
  std::string model;
  std::vector<std::string> tasks{"ppl"};
  std::string data = "wikitext2";
  int ctx = 512, stride = 0, batch = 0;
  int64_t limit_windows = 0;
  bool no_bos = false;
  CommonOptions common;
};

struct TaskResult {
  nlohmann::json json;
  std::vector<Metric> metrics;
};

Result<TaskResult> run_ppl(LoadedModel& lm, const EvalOptions& o, const std::string& dataset) {
  ASSIGN_OR_RETURN(std::filesystem::path path, resolve_dataset(dataset));
  ASSIGN_OR_RETURN(std::string text, read_text_file(path));
  ASSIGN_OR_RETURN(std::string sha, sha256_file(path));
  auto t0 = std::chrono::steady_clock::now();
  std::vector<int32_t> tokens = lm.tokenizer->encode(text, false);
  const double tokenize_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  PerplexityOptions p;
  p.ctx = o.ctx;
  p.bos = o.no_bos ? BosMode::kNone : BosMode::kPrepend;
  p.stride = o.stride;
  p.limit_windows = o.limit_windows;
  p.batch = o.batch;
  p.quiet = o.common.quiet;
  ASSIGN_OR_RETURN(PerplexityResult r, evaluate_perplexity(*lm.model, tokens, lm.tokenizer->bos_id(), p));
  // Standard error of the mean NLL over windows -> a 95% interval for the perplexity.
  double var = 0;
  for (double w : r.window_nll) var += (w - r.mean_nll) * (w - r.mean_nll);
  const double n = static_cast<double>(r.window_nll.size());
  const double se = n > 1 ? std::sqrt(var / (n - 1) / n) : 0.0;
  TaskResult out;
  out.json = {{"task", "ppl"}, {"data", path.string()}, {"data_sha256", sha}, {"ppl", r.ppl}, {"mean_nll", r.mean_nll},
              {"nll_stderr", se}, {"ppl_ci95", {std::exp(r.mean_nll - 1.96 * se), std::exp(r.mean_nll + 1.96 * se)}},
              {"tokens", r.predictions}, {"text_tokens", r.text_tokens}, {"windows", r.windows}, {"ctx", o.ctx},
              {"bos", !o.no_bos}, {"stride", o.stride > 0 ? o.stride : (o.no_bos ? o.ctx : o.ctx - 1)},
              {"seconds", r.seconds}, {"tokenize_seconds", tokenize_s},
              {"tokens_per_second", r.windows * o.ctx / r.seconds}};
  out.metrics.push_back(Metric{"ppl", r.ppl, std::nullopt, std::exp(r.mean_nll - 1.96 * se),
                               std::exp(r.mean_nll + 1.96 * se), ""});
  out.metrics.push_back(Metric{"mean_nll", r.mean_nll, se, r.mean_nll - 1.96 * se, r.mean_nll + 1.96 * se, "nats"});
  return out;
}

int run_eval(const EvalOptions& o, const CLI::App& app) {
  RunRecord record = new_run_record("eval");
  auto lm = load_model(o.model, o.common);
  if (!lm) return fail(lm.status());
  nlohmann::json results = nlohmann::json::array();
  for (const std::string& task : o.tasks) {
    if (task != "ppl" && task.rfind("ppl:", 0) != 0)
      return fail(invalid_argument("--tasks: unknown task '{}' (available: ppl, ppl:DATASET)", task));
    const std::string dataset = task == "ppl" ? o.data : task.substr(4);
    auto r = run_ppl(*lm, o, dataset);
    if (!r) return fail(r.status());
    results.push_back(r->json);
    for (Metric m : r->metrics) {
      m.name = (task == "ppl" ? "" : task.substr(4) + ".") + m.name;
      record.metrics.push_back(m);
    }
  }
  record.details = {{"results", results}, {"device", o.common.device}};
  Status saved = save_record(record, o.common, o.model, app);
  if (!saved.is_ok()) return fail(saved);
  if (o.common.json) {
    nlohmann::json j = results.size() == 1 ? results[0] : nlohmann::json{{"results", results}};
    j["run_id"] = record.id;
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("%-10s %-40s %10s %20s %10s %8s\n", "task", "data", "ppl", "95% CI", "tokens", "windows");
    for (const auto& r : results)
      std::printf("%-10s %-40s %10.4f %9.3f-%-10.3f %10lld %8lld\n", r["task"].get<std::string>().c_str(),
                  std::filesystem::path(r["data"].get<std::string>()).filename().c_str(), r["ppl"].get<double>(),
                  r["ppl_ci95"][0].get<double>(), r["ppl_ci95"][1].get<double>(),
                  static_cast<long long>(r["tokens"].get<int64_t>()), static_cast<long long>(r["windows"].get<int64_t>()));
  }
  return 0;
}
}  // namespace

Command make_eval_command(CLI::App& root) {
  auto opts = std::make_shared<EvalOptions>();
  CLI::App* app = root.add_subcommand("eval", "measure a model: perplexity on a text file");
  app->add_option("model", opts->model, "model directory")->required();
  app->add_option("--tasks", opts->tasks, "comma-separated tasks: ppl, ppl:DATASET")->delimiter(',')->capture_default_str();
  app->add_option("--data", opts->data, "text file or named dataset for the ppl task")->capture_default_str();
  app->add_option("--ctx", opts->ctx, "window length in tokens (BOS included)")->capture_default_str();
  app->add_flag("--no-bos", opts->no_bos, "windows of ctx text tokens without BOS");
  app->add_option("--stride", opts->stride, "text tokens between window starts (default: non-overlapping)");
  app->add_option("--limit-windows", opts->limit_windows, "evaluate only the first K windows");
  app->add_option("--batch", opts->batch, "windows per forward pass (default: ~2048 tokens)");
  add_common_options(app, opts->common);
  return {app, [opts, app]() { return run_eval(*opts, *app); }};
}

}  // namespace compactor::cli
