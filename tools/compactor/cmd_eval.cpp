// compactor eval MODEL --tasks ppl[:DATASET],kld[:DATASET],arc_easy,mmlu,... [--task-file F.yaml]
// [--limit N] [--shots K] [--seed S] [--base BASE] [--save-logits F] [--json]: perplexity with the
// docs/VERIFY.md convention, KL divergence to a base model, and multiple-choice tasks defined by
// YAML files (configs/tasks/), recorded in the run store with every setting that changes a number.
// Runners: eval_tasks.cpp. Tests: tests/cli/test_cli_eval.cpp.
#include <cmath>
#include <cstdio>

#include "common.h"
#include "eval_tasks.h"

namespace compactor::cli {

namespace {

enum class TaskKind { kPpl, kKld, kMultipleChoice };

struct PlannedTask {
  TaskKind kind;
  std::string name;     // as given ("ppl:wikitext2", "arc_easy")
  std::string dataset;  // ppl/kld
  TaskSpec spec;        // multiple choice
};

Result<std::vector<PlannedTask>> plan_tasks(const EvalOptions& o, const CLI::App& app) {
  std::vector<PlannedTask> plan;
  // The default "ppl" only runs when no task file replaces it.
  const bool tasks_given = app.count("--tasks") > 0 || o.task_files.empty();
  auto dataset_of = [&](const std::string& t, const std::string& p) -> std::optional<std::string> {
    if (t == p) return o.data;
    if (t.rfind(p + ":", 0) == 0) return t.substr(p.size() + 1);
    return std::nullopt;
  };
  for (const std::string& t : tasks_given ? o.tasks : std::vector<std::string>{}) {
    if (auto d = dataset_of(t, "ppl")) {
      plan.push_back({TaskKind::kPpl, t, *d, {}});
      continue;
    }
    if (auto d = dataset_of(t, "kld")) {
      plan.push_back({TaskKind::kKld, t, *d, {}});
      continue;
    }
    auto file = find_task_file(t, task_dir(o));
    if (!file) return Status(file.status().code(), file.status().message() + "; also: ppl, ppl:DATASET, kld, kld:DATASET");
    ASSIGN_OR_RETURN(TaskSpec spec, load_task_spec(*file));
    plan.push_back({TaskKind::kMultipleChoice, t, "", std::move(spec)});
  }
  for (const std::string& f : o.task_files) {
    ASSIGN_OR_RETURN(TaskSpec spec, load_task_spec(f));
    plan.push_back({TaskKind::kMultipleChoice, spec.name, "", std::move(spec)});
  }
  if (plan.empty()) return invalid_argument("--tasks: no task given");
  return plan;
}

// Loads --base: a model directory, or a saved-logits file (only kld tasks can use one).
Status load_base(const EvalOptions& o, const std::vector<PlannedTask>& plan, std::optional<LoadedModel>& model,
                 std::optional<BaseLogits>& saved) {
  if (o.base.empty()) return Status::ok();
  if (std::filesystem::is_regular_file(o.base)) {
    for (const auto& t : plan)
      if (t.kind == TaskKind::kMultipleChoice)
        return invalid_argument("--base {} is a saved-logits file; task {} needs a base model directory", o.base, t.name);
    ASSIGN_OR_RETURN(saved, load_base_logits(o.base));
    return Status::ok();
  }
  auto lm = load_model(o.base, o.common);
  if (!lm) return lm.status().with_context("--base");
  model = std::move(*lm);
  return Status::ok();
}

std::string fmt_estimate(const nlohmann::json& e) {
  auto num = [](const nlohmann::json& v) { return v.is_number() ? fmt::format("{:.4f}", v.get<double>()) : std::string("-"); };
  return fmt::format("{:>8} ±{:>7}  [{}, {}]", num(e["value"]), num(e["stderr"]), num(e["ci95"][0]), num(e["ci95"][1]));
}

void print_table(const nlohmann::json& results) {
  for (const auto& r : results) {
    const std::string task = r["task"].get<std::string>();
    if (task == "ppl") {
      std::printf("%-16s %-28s ppl %.4f  95%% CI [%.3f, %.3f]  tokens %lld  windows %lld\n", task.c_str(),
                  std::filesystem::path(r["data"].get<std::string>()).filename().c_str(), r["ppl"].get<double>(),
                  r["ppl_ci95"][0].get<double>(), r["ppl_ci95"][1].get<double>(),
                  static_cast<long long>(r["tokens"].get<int64_t>()), static_cast<long long>(r["windows"].get<int64_t>()));
    } else if (task == "kld") {
      if (!r.contains("mean_kld")) {
        std::printf("%-16s saved top-%d logits of %lld positions to %s\n", task.c_str(), r["saved_logits"]["k"].get<int>(),
                    static_cast<long long>(r["saved_logits"]["positions"].get<int64_t>()),
                    r["saved_logits"]["path"].get<std::string>().c_str());
        continue;
      }
      std::printf("%-16s n %lld (%s)  ppl %.4f  ppl_base %.4f\n", task.c_str(), static_cast<long long>(r["n"].get<int64_t>()),
                  r["kld_method"].get<std::string>().c_str(), r["ppl"].get<double>(), r["ppl_base"].get<double>());
      std::printf("  %-22s %s\n  %-22s %.6f\n  %-22s %s\n  %-22s %s\n", "mean KLD", fmt_estimate(r["mean_kld"]).c_str(),
                  "99% KLD", r["kld_p99"].get<double>(), "top-1 agreement", fmt_estimate(r["top1_agreement"]).c_str(),
                  "mean Δp", fmt_estimate(r["mean_delta_p"]).c_str());
    } else {
      std::printf("%-16s n %-6lld shots %d  %.1f items/s\n", task.c_str(), static_cast<long long>(r["n"].get<int64_t>()),
                  r["shots"].get<int>(), r["items_per_second"].get<double>());
      for (const auto& [key, value] : r.items())
        if (value.is_object() && value.contains("value")) std::printf("  %-12s %s\n", key.c_str(), fmt_estimate(value).c_str());
      if (r.contains("delta"))
        for (const auto& [key, value] : r["delta"].items())
          std::printf("  Δ%-11s %s\n", key.c_str(), fmt_estimate(value).c_str());
    }
  }
}

int run_eval(const EvalOptions& o, const CLI::App& app) {
  RunRecord record = new_run_record("eval");
  auto plan = plan_tasks(o, app);
  if (!plan) return fail(plan.status());
  auto lm = load_model(o.model, o.common);
  if (!lm) return fail(lm.status());
  std::optional<LoadedModel> base_model;
  std::optional<BaseLogits> base_saved;
  if (Status s = load_base(o, *plan, base_model, base_saved); !s.is_ok()) return fail(s);
  BaseSource base{base_model ? &*base_model : nullptr, base_saved ? &*base_saved : nullptr, o.base};
  nlohmann::json results = nlohmann::json::array();
  for (const PlannedTask& t : *plan) {
    Result<TaskResult> r = t.kind == TaskKind::kPpl   ? run_ppl(*lm, o, t.dataset)
                           : t.kind == TaskKind::kKld ? run_kld(*lm, base, o, t.dataset)
                                                      : run_mc_task(*lm, base.model, t.spec, o);
    if (!r) return fail(r.status());
    results.push_back(r->json);
    for (Metric m : r->metrics) {
      // ppl keeps its historical names ("ppl", "<dataset>.ppl"); other metrics arrive as "task/metric".
      if (t.kind == TaskKind::kPpl) m.name = (t.name == "ppl" ? "" : t.dataset + ".") + m.name;
      if (t.kind == TaskKind::kKld) m.name = t.name + "/" + m.name;
      record.metrics.push_back(m);
    }
  }
  record.details = {{"results", results}, {"device", o.common.device}, {"model", model_metadata(*lm)}};
  if (base_model) record.details["base_model"] = model_metadata(*base_model);
  if (o.seed >= 0) record.seed = o.seed;
  Status saved = save_record(record, o.common, o.model, app);
  if (!saved.is_ok()) return fail(saved);
  if (o.common.json) {
    nlohmann::json j = results.size() == 1 ? results[0] : nlohmann::json{{"results", results}};
    j["run_id"] = record.id;
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    print_table(results);
  }
  return 0;
}

void add_task_options(CLI::App* app, EvalOptions& o) {
  app->add_option("--task-file", o.task_files, "a task defined by a YAML file (repeatable)");
  app->add_option("--task-dir", o.task_dir, "directory of task YAML files (default: configs/tasks)");
  app->add_option("--data-dir", o.data_dir, "root of relative task data paths (default: ../shared/data)");
  app->add_option("--limit", o.limit, "items per task (per subject for MMLU); 0: all");
  app->add_option("--shots", o.shots, "few-shot examples (default: the task file's count)");
  app->add_option("--seed", o.seed, "random --limit subset, few-shot sampling and bootstrap seed (default: first N; 1234)");
  app->add_option("--bootstrap", o.bootstrap, "bootstrap resamples of each interval")->capture_default_str();
  app->add_flag("--skip-bad", o.skip_bad, "skip and count malformed data rows instead of failing");
  app->add_flag("--add-bos", o.add_bos, "prepend BOS to multiple-choice contexts (lm-eval's add_bos_token)");
  app->add_option("--batch-tokens", o.batch_tokens, "token rows per forward pass (multiple choice)")->capture_default_str();
  app->add_option("--base", o.base, "base model directory (paired deltas, kld) or a --save-logits file (kld)");
  app->add_option("--save-logits", o.save_logits, "kld: save the base's (or this model's) top-k logits to FILE");
  app->add_option("--logits-topk", o.logits_topk, "kld: tokens kept per position by --save-logits")->capture_default_str();
}

}  // namespace

Command make_eval_command(CLI::App& root) {
  auto opts = std::make_shared<EvalOptions>();
  CLI::App* app = root.add_subcommand("eval", "measure a model: perplexity, KL divergence, multiple-choice tasks");
  app->add_option("model", opts->model, "model directory")->required();
  app->add_option("--tasks", opts->tasks, "comma-separated: ppl[:DATASET], kld[:DATASET], or task names (configs/tasks)")
      ->delimiter(',')
      ->capture_default_str();
  app->add_option("--data", opts->data, "text file or named dataset for ppl/kld")->capture_default_str();
  app->add_option("--ctx", opts->ctx, "window length in tokens (BOS included)")->capture_default_str();
  app->add_flag("--no-bos", opts->no_bos, "windows of ctx text tokens without BOS");
  app->add_option("--stride", opts->stride, "text tokens between window starts (default: non-overlapping)");
  app->add_option("--limit-windows", opts->limit_windows, "evaluate only the first K windows");
  app->add_option("--batch", opts->batch, "windows per forward pass (default: ~2048 tokens)");
  add_task_options(app, *opts);
  add_common_options(app, opts->common);
  return {app, [opts, app]() { return run_eval(*opts, *app); }};
}

}  // namespace compactor::cli
