// `compactor quantize --method nf4` (quantize_nf4.h).
// Test: tests/cli/test_cli_quantize.cpp.
#include "quantize_nf4.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <optional>

#include "backend/cpu/cpu_backend.h"
#include "compress/compressed_model.h"
#include "compress/module_rules.h"
#include "datasets.h"
#include "eval/perplexity.h"
#include "exp/recipe.h"
#include "formats/nf4.h"
#include "io/text_file.h"

namespace compactor::cli {

namespace {

struct NF4Rule {
  std::string pattern;
  bool keep = false;
};

Result<std::vector<NF4Rule>> parse_rules(const std::vector<std::string>& overrides) {
  std::vector<NF4Rule> rules;
  for (const std::string& text : overrides) {
    const size_t eq = text.rfind('=');
    const std::string value = eq == std::string::npos ? "" : text.substr(eq + 1);
    const bool keep = value == "keep" || value == "fp16" || value == "bf16" || value == "16" || value == "none";
    if (eq == std::string::npos || eq == 0 || (!keep && value != "nf4"))
      return invalid_argument("--override '{}': --method nf4 takes PATTERN=nf4 or PATTERN=keep|fp16|bf16|16|none",
                              text);
    rules.push_back({text.substr(0, eq), keep});
  }
  return rules;
}

// Block linears default to nf4, lm_head to dense; the last matching rule wins.
bool quantize_module(const std::string& module, const std::vector<NF4Rule>& rules) {
  bool q = module != "lm_head";
  for (const NF4Rule& r : rules)
    if (module_pattern_matches(r.pattern, module)) q = !r.keep;
  return q;
}

struct NF4Report {
  std::string module;
  int64_t out_features = 0, in_features = 0;
  double weight_rel_error = 0;  // ‖W − Ŵ‖² / ‖W‖² with the double-quantized absmax
  double seconds = 0;
};

Result<std::vector<float>> dense_f32(const Model& m, const std::string& tensor) {
  const TensorEntry* e = m.files().find(tensor);
  if (e == nullptr) return not_found("tensor '{}' is missing (is the module already quantized?)", tensor);
  const View v = e->view();
  std::vector<float> out(v.numel());
  convert_to_f32(v.data, v.dtype, v.numel(), out.data());
  return out;
}

Result<NF4Report> quantize_one(const Model& base, const std::string& module, int64_t n, int64_t k, int block,
                               std::map<std::string, NF4Linear>& out) {
  const auto t0 = std::chrono::steady_clock::now();
  const std::string tensor = module == "lm_head" && base.files().find("lm_head.weight") == nullptr
                                 ? base.arch().names.embed  // tied head: its own copy of the embedding
                                 : module + ".weight";
  ASSIGN_OR_RETURN(std::vector<float> w, dense_f32(base, tensor));
  NF4Linear q = quantize_nf4(w.data(), n, k, block);
  auto packed = pack_nf4(q);
  if (!packed.is_ok()) return packed.status().with_context("nf4 module '" + module + "'");
  std::vector<float> deq(n * k);
  dequantize_nf4_ref(packed->ref(), deq.data());
  double err = 0, norm = 0;
  for (int64_t i = 0; i < n * k; ++i) {
    err += (double(w[i]) - deq[i]) * (double(w[i]) - deq[i]);
    norm += double(w[i]) * w[i];
  }
  out.emplace(module, std::move(q));
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return NF4Report{module, n, k, norm > 0 ? err / norm : 0.0, secs};
}

Result<std::vector<NF4Report>> quantize_all(const Model& base, const NF4QuantizeOptions& o,
                                            std::map<std::string, NF4Linear>& out) {
  if (o.block <= 0) return invalid_argument("--group {}: the nf4 block size must be positive", o.block);
  ASSIGN_OR_RETURN(std::vector<NF4Rule> rules, parse_rules(o.overrides));
  std::vector<std::pair<std::string, std::pair<int64_t, int64_t>>> linears;
  for (const auto& [name, w] : base.named_linears()) linears.push_back({name, {w->out_features, w->in_features}});
  if (linears.back().first != "lm_head")  // tied: quantizing the head stores lm_head.* on its own
    linears.push_back({"lm_head", {base.config().vocab_size, base.config().hidden_size}});
  std::vector<NF4Report> reports;
  for (const auto& [name, nk] : linears) {
    if (!quantize_module(name, rules)) continue;
    ASSIGN_OR_RETURN(NF4Report r, quantize_one(base, name, nk.first, nk.second, o.block, out));
    if (!o.common.quiet) std::fprintf(stderr, "nf4 %-40s rel_error %.4e\n", name.c_str(), r.weight_rel_error);
    reports.push_back(std::move(r));
  }
  return reports;
}

Result<nlohmann::json> perplexity_json(const std::string& dir, const NF4QuantizeOptions& o) {
  ASSIGN_OR_RETURN(LoadedModel lm, load_model(dir, o.common));
  return perplexity_records(lm, o.eval, o.eval_ctx, o.limit_windows, o.common.quiet);
}

nlohmann::json layers_json(const std::vector<NF4Report>& reports, int block) {
  nlohmann::json layers = nlohmann::json::array();
  for (const NF4Report& r : reports)
    layers.push_back({{"module", r.module}, {"format", "nf4"}, {"group_size", block},
                      {"shape", {r.out_features, r.in_features}}, {"weight_rel_error", r.weight_rel_error},
                      {"seconds", r.seconds},
                      {"bits_per_weight", nf4_bits_per_weight(r.out_features, r.in_features, block)}});
  return layers;
}

nlohmann::json summary_json(const NF4QuantizeOptions& o, const std::vector<NF4Report>& reports, double seconds) {
  double bits = 0, weights = 0;
  for (const NF4Report& r : reports) {
    bits += 8.0 * static_cast<double>(nf4_packed_bytes(r.out_features, r.in_features, o.block));
    weights += static_cast<double>(r.out_features * r.in_features);
  }
  return {{"method", "nf4"}, {"bits", 4}, {"group_size", o.block}, {"device", o.common.device}, {"model", o.model},
          {"quantized_linears", reports.size()}, {"seconds", seconds},
          {"bits_per_weight_linears", weights > 0 ? bits / weights : 16.0}};
}

// Saves OUT (or a temporary directory for --no-save --eval), measures, fills the summary.
Status save_and_measure(const Model& base, const std::map<std::string, NF4Linear>& nf4, const NF4QuantizeOptions& o,
                        const nlohmann::json& provenance, nlohmann::json& summary) {
  if (o.no_save && o.eval.empty()) return Status::ok();
  const std::filesystem::path out = o.no_save ? std::filesystem::temp_directory_path() /
                                                    fmt::format("compactor-nf4-{}", getpid())
                                              : std::filesystem::path(o.out);
  RETURN_IF_ERROR(save_compressed_model(base, {}, nf4, provenance, out,
                                        o.overwrite || o.no_save ? Overwrite::kYes : Overwrite::kNo));
  {
    CpuBackend cpu;
    ASSIGN_OR_RETURN(std::unique_ptr<Model> saved, Model::load(out, cpu));
    summary["bits_per_weight_model"] = saved->weight_bits().bits_per_weight();
  }
  if (!o.no_save) {
    summary["out"] = o.out;
    summary["file_bytes"] = directory_bytes(out);
  }
  Status st = Status::ok();
  if (!o.eval.empty()) {
    auto ppl = perplexity_json(out.string(), o);
    if (ppl.is_ok()) summary["ppl"] = *ppl;
    st = ppl.status();
  }
  if (o.no_save) std::filesystem::remove_all(out);
  return st;
}

void print_table(const std::vector<NF4Report>& reports, const nlohmann::json& summary) {
  std::printf("%-42s %6s %16s %8s\n", "module", "spec", "weight_rel_error", "seconds");
  for (const NF4Report& r : reports)
    std::printf("%-42s %6s %16.4e %8.2f\n", r.module.c_str(), "nf4", r.weight_rel_error, r.seconds);
  for (const auto& [k, v] : summary.items()) std::printf("%-28s %s\n", k.c_str(), v.dump().c_str());
}

void add_metrics(RunRecord& record, const nlohmann::json& summary) {
  auto metric = [&](const std::string& name, double v, const char* unit) {
    record.metrics.push_back(Metric{name, v, std::nullopt, std::nullopt, std::nullopt, unit});
  };
  metric("seconds", summary["seconds"].get<double>(), "s");
  metric("bits_per_weight_linears", summary["bits_per_weight_linears"].get<double>(), "bits");
  if (summary.contains("bits_per_weight_model"))
    metric("bits_per_weight", summary["bits_per_weight_model"].get<double>(), "bits");
  if (summary.contains("file_bytes")) metric("file_bytes", static_cast<double>(summary["file_bytes"].get<int64_t>()), "bytes");
  if (summary.contains("ppl"))
    for (const auto& [d, j] : summary["ppl"].items()) metric(d + ".ppl", j["ppl"].get<double>(), "");
  if (summary.contains("base_ppl"))
    for (const auto& [d, j] : summary["base_ppl"].items()) metric(d + ".base_ppl", j["ppl"].get<double>(), "");
}

Status run(const NF4QuantizeOptions& o, const CLI::App& app, nlohmann::json& summary, nlohmann::json& layers) {
  if (!o.no_save && std::filesystem::exists(o.out) && !o.overwrite)
    return invalid_argument("{} already exists (--overwrite to replace it)", o.out);
  CommonOptions host = o.common;
  host.device = "cpu";  // quantization reads the checkpoint's tensors; no device needed
  ASSIGN_OR_RETURN(LoadedModel base, load_model(o.model, host));
  const auto t0 = std::chrono::steady_clock::now();
  std::map<std::string, NF4Linear> nf4;
  ASSIGN_OR_RETURN(std::vector<NF4Report> reports, quantize_all(*base.model, o, nf4));
  summary = summary_json(o, reports, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  layers = layers_json(reports, o.block);
  if (o.eval_base) { ASSIGN_OR_RETURN(summary["base_ppl"], perplexity_json(o.model, o)); }
  const nlohmann::json provenance = {{"command", "quantize"}, {"args", options_to_json(app)}, {"summary", summary},
                                     {"layers", layers}};
  return save_and_measure(*base.model, nf4, o, provenance, summary);
}

}  // namespace

int run_quantize_nf4(const NF4QuantizeOptions& o, const CLI::App& app) {
  RunRecord record = new_run_record("quantize");
  nlohmann::json summary, layers;
  Status st = run(o, app, summary, layers);
  if (!st.is_ok()) return fail(st);
  add_metrics(record, summary);
  record.details = {{"summary", summary}, {"layers", layers}};
  Status saved = save_record(record, o.common, o.model, app);
  if (!saved.is_ok()) return fail(saved);
  if (o.common.json) {
    std::printf("%s\n", nlohmann::json{{"summary", summary}, {"layers", layers}, {"run_id", record.id}}.dump(2).c_str());
  } else {
    std::vector<NF4Report> reports;
    for (const auto& l : layers)
      reports.push_back({l["module"], 0, 0, l["weight_rel_error"].get<double>(), l["seconds"].get<double>()});
    print_table(reports, summary);
  }
  return 0;
}

}  // namespace compactor::cli
