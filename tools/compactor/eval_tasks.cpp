// The task runners of `compactor eval` (see eval_tasks.h).
#include "eval_tasks.h"

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <fstream>

#include "datasets.h"
#include "eval/multiple_choice.h"
#include "eval/perplexity.h"
#include "io/text_file.h"

namespace compactor::cli {

namespace {

Metric metric_of(const std::string& name, const Estimate& e, const std::string& unit = "") {
  return Metric{name, e.value, std::isfinite(e.stderr_) ? std::optional<double>(e.stderr_) : std::nullopt,
                e.ci_low, e.ci_high, unit};
}

BootstrapOptions bootstrap_of(const EvalOptions& o) {
  return {o.bootstrap, o.seed >= 0 ? static_cast<uint64_t>(o.seed) : 1234u};
}

PerplexityOptions ppl_options(const EvalOptions& o) {
  PerplexityOptions p;
  p.ctx = o.ctx;
  p.bos = o.no_bos ? BosMode::kNone : BosMode::kPrepend;
  p.stride = o.stride;
  p.limit_windows = o.limit_windows;
  p.batch = o.batch;
  p.quiet = o.common.quiet;
  return p;
}

// Settings a saved base must share with this run.
Status check_saved_settings(const BaseLogits& saved, const std::map<std::string, std::string>& want,
                            const std::string& path) {
  for (const auto& [key, value] : want) {
    auto it = saved.meta.find(key);
    const std::string have = it == saved.meta.end() ? "(absent)" : it->second;
    if (have != value)
      return invalid_argument("--base {}: saved with {} = {}, this run has {} (use the same data and --ctx/--stride/"
                              "--limit-windows/--no-bos)", path, key, have, value);
  }
  return Status::ok();
}

Estimate estimate_from_json(const nlohmann::json& e) {
  auto num = [](const nlohmann::json& v) { return v.is_number() ? v.get<double>() : std::nan(""); };
  return {num(e.at("value")), num(e.at("stderr")), num(e.at("ci95").at(0)), num(e.at("ci95").at(1)), 0};
}

nlohmann::json kl_json(const KlSummary& s) {
  return {{"n", s.n},
          {"mean_kld", estimate_json(s.kld)},
          {"kld_median", s.kld_median},
          {"kld_p90", s.kld_p90},
          {"kld_p99", s.kld_p99},
          {"kld_p999", s.kld_p999},
          {"kld_max", s.kld_max},
          {"top1_agreement", estimate_json(s.top1)},
          {"mean_delta_p", estimate_json(s.delta_p)},
          {"rms_delta_p", s.rms_delta_p},
          {"ppl", s.ppl_model},
          {"ppl_base", s.ppl_base}};
}

}  // namespace

std::filesystem::path task_dir(const EvalOptions& o) {
  if (!o.task_dir.empty()) return o.task_dir;
  if (const char* env = std::getenv("COMPACTOR_TASKS")) return env;
  if (std::filesystem::is_directory("configs/tasks")) return "configs/tasks";
  return COMPACTOR_DEFAULT_TASKS;
}

std::filesystem::path data_dir(const EvalOptions& o) {
  return o.data_dir.empty() ? shared_dir() / "data" : std::filesystem::path(o.data_dir);
}

nlohmann::json model_metadata(const LoadedModel& lm) {
  const Model& m = *lm.model;
  const WeightBits bits = m.weight_bits();
  nlohmann::json j = {{"parameters", bits.params},
                      {"weight_bytes", bits.bytes},
                      {"bits_per_parameter", bits.bits_per_weight()},
                      {"quantized_parameters", bits.quantized_params},
                      {"quantized_bits_per_weight", bits.quantized_bits_per_weight()},
                      {"torch_dtype", m.config().torch_dtype}};
  for (const char* key : {"quantization_config", "compression_config"})
    if (m.config().raw.is_object() && m.config().raw.contains(key)) j[key] = m.config().raw[key];
  // Compressed directories describe their recipe and provenance in compactor.json.
  std::ifstream in(m.dir() / "compactor.json");
  if (in) {
    nlohmann::json c = nlohmann::json::parse(in, nullptr, false);
    if (!c.is_discarded()) j["compactor"] = std::move(c);
  }
  return j;
}

Result<TaskResult> run_ppl(LoadedModel& lm, const EvalOptions& o, const std::string& dataset) {
  ASSIGN_OR_RETURN(std::filesystem::path path, resolve_dataset(dataset));
  ASSIGN_OR_RETURN(std::string text, read_text_file(path));
  ASSIGN_OR_RETURN(std::string sha, sha256_file(path));
  auto t0 = std::chrono::steady_clock::now();
  std::vector<int32_t> tokens = lm.tokenizer->encode(text, false);
  const double tokenize_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSIGN_OR_RETURN(PerplexityResult r, evaluate_perplexity(*lm.model, tokens, lm.tokenizer->bos_id(), ppl_options(o)));
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

Result<TaskResult> run_kld(LoadedModel& lm, const BaseSource& base, const EvalOptions& o, const std::string& dataset) {
  if (!base.model && !base.saved && o.save_logits.empty())
    return invalid_argument("--tasks kld needs --base (a model directory or a --save-logits file), or --save-logits "
                            "to record this model as the base");
  ASSIGN_OR_RETURN(std::filesystem::path path, resolve_dataset(dataset));
  ASSIGN_OR_RETURN(std::string text, read_text_file(path));
  ASSIGN_OR_RETURN(std::string sha, sha256_file(path));
  const std::vector<int32_t> tokens = lm.tokenizer->encode(text, false);
  KlOptions ko;
  ko.ppl = ppl_options(o);
  ko.save_topk = o.logits_topk;
  const auto settings = kl_settings_meta(ko.ppl, sha);
  if (base.saved) RETURN_IF_ERROR(check_saved_settings(*base.saved, settings, base.path));
  if (!o.save_logits.empty() && (o.logits_topk <= 0 || o.logits_topk > lm.model->config().vocab_size))
    return invalid_argument("--logits-topk {} must be in [1, {}]", o.logits_topk, lm.model->config().vocab_size);
  BaseLogits save;
  BaseLogits* save_ptr = o.save_logits.empty() ? nullptr : &save;
  if (save_ptr && base.saved) return invalid_argument("--save-logits: --base is already a saved-logits file");
  ASSIGN_OR_RETURN(KlRun run, evaluate_kl(*lm.model, base.model ? base.model->model.get() : nullptr, base.saved, tokens,
                                          lm.tokenizer->bos_id(), ko, save_ptr));
  TaskResult out;
  out.json = {{"task", "kld"}, {"data", path.string()}, {"data_sha256", sha}, {"windows", run.windows},
              {"ctx", o.ctx}, {"bos", !o.no_bos}, {"seconds", run.seconds}};
  if (save_ptr) {
    save.meta = settings;
    save.meta["model"] = base.model ? base.path : o.model;
    RETURN_IF_ERROR(save_base_logits(o.save_logits, save));
    out.json["saved_logits"] = {{"path", o.save_logits}, {"k", o.logits_topk}, {"positions", save.positions()}};
  }
  if (run.tokens.empty()) return out;  // only saved this model's logits
  const KlSummary s = summarize_kl(run.tokens, bootstrap_of(o));
  out.json.update(kl_json(s));
  out.json["base"] = base.path;
  out.json["kld_method"] = base.saved ? fmt::format("top{}+tail", base.saved->k) : "exact";
  out.json["tokens_per_second"] = static_cast<double>(s.n) / run.seconds;
  out.metrics = {metric_of("mean_kld", s.kld, "nats"), Metric{"kld_p99", s.kld_p99, {}, {}, {}, "nats"},
                 metric_of("top1_agreement", s.top1), metric_of("mean_delta_p", s.delta_p),
                 Metric{"ppl", s.ppl_model, {}, {}, {}, ""}, Metric{"ppl_base", s.ppl_base, {}, {}, {}, ""}};
  return out;
}

Result<TaskResult> run_mc_task(LoadedModel& lm, LoadedModel* base, const TaskSpec& spec, const EvalOptions& o) {
  TaskBuildOptions bo;
  bo.data_dir = data_dir(o);
  bo.shots = o.shots;
  bo.limit = o.limit;
  if (o.seed >= 0) bo.subset_seed = static_cast<uint64_t>(o.seed);
  bo.fewshot_seed = o.seed >= 0 ? static_cast<uint64_t>(o.seed) : 1234u;
  bo.skip_bad = o.skip_bad;
  ASSIGN_OR_RETURN(TaskInstance task, build_task(spec, bo));
  McRunOptions ro;
  ro.tokenize.add_bos = o.add_bos;
  ro.loglik.max_tokens = o.batch_tokens;
  ro.loglik.quiet = o.common.quiet;
  ASSIGN_OR_RETURN(McRun run, run_multiple_choice(*lm.model, *lm.tokenizer, task, spec.metrics, ro));
  std::optional<McRun> base_run;
  if (base) {
    ASSIGN_OR_RETURN(base_run, run_multiple_choice(*base->model, *base->tokenizer, task, spec.metrics, ro));
  }
  TaskResult out;
  out.json = summarize_task(task, spec.metrics, run.scores, base_run ? &base_run->scores : nullptr, bootstrap_of(o));
  nlohmann::json files = nlohmann::json::array();
  for (const TaskGroup& g : task.groups) files.push_back(g.file);
  out.json["data"] = files.size() == 1 ? files[0] : files;
  out.json["task_file"] = spec.file.string();
  out.json["seconds"] = run.seconds;
  out.json["items_per_second"] = static_cast<double>(task.items.size()) / run.seconds;
  out.json["truncated"] = run.truncated;
  out.json["skipped"] = task.skipped.size();
  if (!task.skipped.empty()) out.json["skipped_rows"] = task.skipped;
  out.json["add_bos"] = o.add_bos;
  out.json["forward_tokens"] = run.stats.context_tokens + run.stats.continuation_tokens;
  for (McMetric m : spec.metrics) {
    const std::string name = mc_metric_name(m);
    out.metrics.push_back(metric_of(spec.name + "/" + name, estimate_from_json(out.json[name])));
    if (out.json.contains(name + "_macro"))
      out.metrics.push_back(metric_of(spec.name + "/" + name + "_macro", estimate_from_json(out.json[name + "_macro"])));
    if (base_run)
      out.metrics.push_back(metric_of(spec.name + "/delta_" + name, estimate_from_json(out.json["delta"][name])));
  }
  return out;
}

}  // namespace compactor::cli
