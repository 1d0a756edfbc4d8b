// compactor quantize MODEL OUT --method rtn|gptq|awq --bits B (--group G | --per-channel)
// [--act-order [--static-groups]] [--sym|--asym] --calib FILE --calib-samples N --calib-seqlen L
// --seed S [--override PATTERN=VALUE ...] [--eval DATASETS [--eval-base]] [--device cpu|cuda] [--json]
// compactor quantize --synthetic llama2-7b --device cuda [...]   (speed benchmark, nothing saved)
// compactor quantize MODEL OUT --method nf4 [--group 64] [--override PATTERN=nf4|keep] [--eval ...]
//   (data-free NF4 with double-quantized scales: quantize_nf4.h)
// Weight-only post-training quantization (src/compress/ptq.h) through the layer-by-layer driver;
// prints and records per-layer reconstruction error (‖WX − ŴX‖² / ‖WX‖² on calibration inputs,
// with RTN's for comparison), time per layer, total time, peak memory, bits per weight (scales and
// zeros included) and the size of OUT, which is a compressed model directory every command loads.
// --eval measures perplexity of the quantized model (and with --eval-base of the original first).
// --device cuda runs the block forwards, statistics and solvers on the GPU; --synthetic NAME
// quantizes a model of a known shape with random weights (made on the GPU) and seeded random
// calibration ids, to measure speed: the summary gives each phase's time and the peak GPU memory.
// Tests: tests/cli/test_cli_quantize.cpp, tests/models/test_ptq_*.cpp, tests/cuda/test_cuda_gptq.cpp.
#include <sys/resource.h>

#include <random>

#include <chrono>
#include <cmath>
#include <cstdio>

#include "common.h"
#include "compress/ptq_save.h"
#include "datasets.h"
#include "exp/recipe.h"
#include "eval/perplexity.h"
#include "formats/nf4.h"
#include "formats/quant_pack.h"
#include "io/text_file.h"
#include "model/synthetic.h"
#include "quantize_nf4.h"

#ifdef COMPACTOR_HAS_CUDA
#include "backend/cuda/cuda_backend.h"
#endif

namespace compactor::cli {

namespace {

struct QuantizeOptions : QuantizeRunOptions {
  std::string method = "gptq";
  int bits = 4, group = 128;
  bool per_channel = false, act_order = false, static_groups = false, sym = false, asym = false;
  std::string calib = "c4";
  int calib_samples = 128, calib_seqlen = 0;
  uint64_t seed = 0;
  float percdamp = 0.01f;
  int block_size = 128;
  bool no_true_sequential = false;
  int awq_grid = 20;
  bool no_awq_clip = false, awq_duo = false;
  std::string synthetic;
  int64_t batch_tokens = 0;
};

Result<PtqOptions> ptq_options(const QuantizeOptions& o) {
  PtqOptions p;
  ASSIGN_OR_RETURN(p.method, ptq_method_from_name(o.method));
  if (o.sym && o.asym) return invalid_argument("--sym and --asym exclude each other");
  if (o.per_channel && o.group != 128 && o.group != 0)
    return invalid_argument("--per-channel and --group {} exclude each other", o.group);
  if (o.static_groups && !o.act_order) return invalid_argument("--static-groups only applies with --act-order");
  if ((o.act_order || o.static_groups) && p.method != PtqMethod::kGptq)
    return invalid_argument("--act-order/--static-groups are GPTQ options (--method gptq)");
  p.spec = QuantSpec{o.bits, o.per_channel ? 0 : o.group, o.sym};
  for (const std::string& text : o.overrides) {
    ASSIGN_OR_RETURN(ModuleRule rule, parse_module_rule(text));
    p.rules.push_back(std::move(rule));
  }
  p.act_order = o.act_order;
  p.static_groups = o.static_groups;
  p.true_sequential = !o.no_true_sequential;
  p.percdamp = o.percdamp;
  p.block_size = o.block_size;
  p.awq.grid = o.awq_grid;
  p.awq_clip = !o.no_awq_clip;
  p.awq.duo_scaling = o.awq_duo;
  p.quiet = o.common.quiet;
  if (o.batch_tokens < 0) return invalid_argument("--batch-tokens {} is negative", o.batch_tokens);
  p.batch_tokens = o.batch_tokens;
  return p;
}

Result<nlohmann::json> measure_all(LoadedModel& lm, const QuantizeOptions& o) {
  return perplexity_records(lm, o.eval, o.eval_ctx, o.limit_windows, o.common.quiet);
}

nlohmann::json report_json(const LinearReport& r) {
  nlohmann::json j = {{"module", r.module}, {"layer", r.layer}, {"linear", r.linear}, {"bits", r.spec.bits},
                      {"group_size", r.spec.group_size}, {"sym", r.spec.symmetric}, {"act_order", r.act_order},
                      {"shape", {r.out_features, r.in_features}}, {"seconds", r.seconds},
                      {"bits_per_weight", r.bits_per_weight}};
  if (r.rel_error >= 0) {
    j["rel_error"] = r.rel_error;
    j["rtn_rel_error"] = r.rtn_rel_error;
  }
  if (r.dead_columns > 0) j["dead_columns"] = r.dead_columns;
  if (r.damp_retries > 0) j["damp_retries"] = r.damp_retries;
  if (r.awq_alpha >= 0) j["awq_alpha"] = r.awq_alpha;
  return j;
}

void print_table(const PtqResult& r, const nlohmann::json& summary) {
  std::printf("%-42s %6s %12s %12s %8s\n", "module", "spec", "rel_error", "rtn_error", "seconds");
  for (const LinearReport& l : r.linears) {
    const std::string spec = "w" + std::to_string(l.spec.bits) + (l.spec.group_size ? "g" + std::to_string(l.spec.group_size) : "");
    if (l.rel_error >= 0)
      std::printf("%-42s %6s %12.4e %12.4e %8.2f\n", l.module.c_str(), spec.c_str(), l.rel_error, l.rtn_rel_error, l.seconds);
    else
      std::printf("%-42s %6s %12s %12s %8.2f\n", l.module.c_str(), spec.c_str(), "-", "-", l.seconds);
  }
  for (const auto& [k, v] : summary.items()) std::printf("%-28s %s\n", k.c_str(), v.dump().c_str());
}

struct Run {
  LoadedModel lm;
  PtqOptions ptq;
  std::optional<CalibrationSet> calib;
  nlohmann::json base_ppl, quant_ppl;
  PtqResult result;
};

// A model of a known shape with random weights made on the GPU (no files, no tokenizer).
Result<LoadedModel> build_synthetic_model(const QuantizeOptions& o) {
  ASSIGN_OR_RETURN(ModelConfig cfg, synthetic_config(o.synthetic));
  if (o.common.device != "cuda")
    return unsupported("--synthetic {}: synthetic models are made on the GPU; add --device cuda", o.synthetic);
#ifdef COMPACTOR_HAS_CUDA
  ASSIGN_OR_RETURN(std::unique_ptr<CudaBackend> be, CudaBackend::create({}));
  LoadedModel lm;
  try {
    ASSIGN_OR_RETURN(lm.model, Model::allocate(cfg, *be));
  } catch (const std::bad_alloc&) {
    return Status(StatusCode::kOutOfMemory, fmt::format("--synthetic {}: out of GPU memory placing the weights", o.synthetic));
  }
  CudaBackend* cuda = be.get();
  Status fill_status;
  fill_synthetic_weights(*lm.model, o.seed, [&](View v, uint64_t stream, float mean, float stddev) {
    if (fill_status.is_ok()) fill_status = cuda->fill_normal(v, stream, mean, stddev);
  });
  RETURN_IF_ERROR(fill_status);
  be->synchronize();
  lm.backend = std::move(be);
  return lm;
#else
  return unsupported("--synthetic: this build of compactor has no CUDA backend");
#endif
}

// Seeded uniform random token ids: the calibration set of a synthetic model.
CalibrationSet random_calibration(int samples, int seqlen, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> ids(static_cast<int64_t>(samples) * seqlen);
  for (int32_t& id : ids) id = static_cast<int32_t>(rng() % static_cast<uint64_t>(vocab));
  CalibrationSet c = calibration_from_ids(std::move(ids), samples, seqlen);
  c.source = "random token ids";
  c.mode = "random";
  c.seed = seed;
  return c;
}

Status quantize(const QuantizeOptions& o, Run& run) {
  ASSIGN_OR_RETURN(run.ptq, ptq_options(o));
  if (!o.synthetic.empty()) {
    if (!o.eval.empty() || o.eval_base)
      return invalid_argument("--synthetic: --eval/--eval-base need a real model (random weights, no tokenizer)");
    ASSIGN_OR_RETURN(run.lm, build_synthetic_model(o));
  } else {
    ASSIGN_OR_RETURN(run.lm, load_model(o.model, o.common));
  }
  if (!o.no_save && std::filesystem::exists(o.out) && !o.overwrite)
    return invalid_argument("{} already exists (--overwrite to replace it)", o.out);
  const ModelConfig& cfg = run.lm.model->config();
  const int seqlen = o.calib_seqlen > 0 ? o.calib_seqlen : static_cast<int>(std::min<int64_t>(512, cfg.max_position_embeddings));
  if (seqlen > cfg.max_position_embeddings)
    return invalid_argument("--calib-seqlen {} exceeds the model's maximum of {} positions", seqlen,
                            cfg.max_position_embeddings);
  if (!o.synthetic.empty()) {
    if (o.calib_samples <= 0) return invalid_argument("--calib-samples {} must be positive", o.calib_samples);
    run.calib = random_calibration(o.calib_samples, seqlen, cfg.vocab_size, o.seed);
  } else if (o.calib != "none") {
    ASSIGN_OR_RETURN(std::filesystem::path path, resolve_dataset(o.calib));
    CalibrationOptions c;
    c.file = path;
    c.samples = o.calib_samples;
    c.seqlen = seqlen;
    c.seed = o.seed;
    ASSIGN_OR_RETURN(run.calib, load_calibration(c, *run.lm.tokenizer));
  }
  if (o.eval_base) { ASSIGN_OR_RETURN(run.base_ppl, measure_all(run.lm, o)); }
  ASSIGN_OR_RETURN(run.result, quantize_model(*run.lm.model, run.calib ? &*run.calib : nullptr, run.ptq));
  if (!o.eval.empty()) { ASSIGN_OR_RETURN(run.quant_ppl, measure_all(run.lm, o)); }
  return Status::ok();
}

// Seconds to pack every quantized linear into its storage layout (the work of a save without the
// file writes), for --no-save runs that still report the phase.
double pack_seconds(const PtqResult& r) {
  std::vector<const QuantizedLinear*> linears;
  for (const auto& [name, q] : r.quantized) linears.push_back(&q);
  const auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel for schedule(dynamic)
  for (int64_t i = 0; i < static_cast<int64_t>(linears.size()); ++i) (void)pack_linear(*linears[i]);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

nlohmann::json phases_json(const PtqResult& r) {
  const PtqResult::Phases& p = r.phases;
  const double known = p.embed + p.forward + p.stats + p.factor + p.sweep + p.measure + p.write_back;
  return {{"embed_s", p.embed}, {"calibration_forward_s", p.forward}, {"statistics_s", p.stats},
          {"cholesky_s", p.factor}, {"sweep_s", p.sweep}, {"error_measurement_s", p.measure},
          {"write_back_s", p.write_back}, {"other_s", std::max(0.0, r.seconds - known)}, {"quantize_s", r.seconds}};
}

// Device memory of a CUDA run (null on the CPU): the backend's allocations (weights, hidden states,
// statistics, solver scratch; not cuBLAS/cuSOLVER internals) and what cudaMemGetInfo says now.
nlohmann::json gpu_memory_json(const LoadedModel& lm) {
#ifdef COMPACTOR_HAS_CUDA
  const auto* cuda = dynamic_cast<const CudaBackend*>(lm.backend.get());
  if (cuda == nullptr) return nullptr;
  const CudaMemoryInfo mem = cuda->memory_info();
  const double mib = 1024.0 * 1024.0;
  const double weights = static_cast<double>(model_weight_bytes(*lm.model));
  return {{"weights_mb", weights / mib}, {"peak_allocated_mb", mem.peak_allocated_bytes / mib},
          {"peak_over_weights_mb", (mem.peak_allocated_bytes - weights) / mib},
          {"device_used_at_end_mb", (mem.total_bytes - mem.free_bytes) / mib}, {"device_total_mb", mem.total_bytes / mib}};
#else
  (void)lm;
  return nullptr;
#endif
}

nlohmann::json calibration_json(const Run& run) {
  if (!run.calib) return nullptr;
  const CalibrationSet& c = *run.calib;
  return {{"file", c.source}, {"sha256", c.sha256}, {"mode", c.mode}, {"samples", c.samples}, {"seqlen", c.seqlen},
          {"seed", c.seed}, {"source_tokens", c.source_tokens}, {"candidates", c.candidates}};
}

nlohmann::json summary_json(const QuantizeOptions& o, const Run& run) {
  const PtqResult& r = run.result;
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  const double linear_bpw = r.quantized_weights > 0 ? r.quantized_bits / static_cast<double>(r.quantized_weights) : 16.0;
  nlohmann::json gpu = gpu_memory_json(run.lm);
  return {{"method", o.method}, {"bits", o.bits}, {"group_size", run.ptq.spec.group_size}, {"device", o.common.device},
          {"model", o.synthetic.empty() ? o.model : "synthetic " + o.synthetic}, {"phases", phases_json(r)},
          {"gpu_memory", gpu}, {"solvers_on_gpu", r.on_gpu},
          {"sym", run.ptq.spec.symmetric}, {"act_order", o.act_order}, {"quantized_linears", r.linears.size()},
          {"seconds", r.seconds}, {"peak_rss_mb", static_cast<double>(usage.ru_maxrss) / 1024.0},
          {"bits_per_weight_linears", linear_bpw}, {"bits_per_weight_model", model_bits_per_weight(*run.lm.model, r)},
          {"layer_seconds", r.layer_seconds}};
}

void add_metrics(RunRecord& record, const nlohmann::json& summary, const Run& run) {
  auto metric = [&](const std::string& name, double v, const char* unit) {
    record.metrics.push_back(Metric{name, v, std::nullopt, std::nullopt, std::nullopt, unit});
  };
  metric("seconds", summary["seconds"].get<double>(), "s");
  metric("peak_rss_mb", summary["peak_rss_mb"].get<double>(), "MiB");
  metric("bits_per_weight", summary["bits_per_weight_model"].get<double>(), "bits");
  metric("bits_per_weight_linears", summary["bits_per_weight_linears"].get<double>(), "bits");
  if (summary.contains("file_bytes")) metric("file_bytes", static_cast<double>(summary["file_bytes"].get<int64_t>()), "bytes");
  for (const auto& [d, j] : run.quant_ppl.items()) metric(d + ".ppl", j["ppl"].get<double>(), "");
  for (const auto& [d, j] : run.base_ppl.items()) metric(d + ".base_ppl", j["ppl"].get<double>(), "");
}

int run_quantize(const QuantizeOptions& o, const CLI::App& app) {
  RunRecord record = new_run_record("quantize");
  Run run;
  Status st = quantize(o, run);
  if (!st.is_ok()) return fail(st);
  nlohmann::json layers = nlohmann::json::array();
  for (const LinearReport& l : run.result.linears) layers.push_back(report_json(l));
  nlohmann::json summary = summary_json(o, run);
  const nlohmann::json provenance = {{"command", "quantize"}, {"args", options_to_json(app)},
                                     {"calibration", calibration_json(run)}, {"summary", summary}, {"layers", layers}};
  if (!o.no_save) {
    const auto t_save = std::chrono::steady_clock::now();
    Status saved = save_quantized_model(*run.lm.model, run.result, provenance, o.out,
                                        o.overwrite ? Overwrite::kYes : Overwrite::kNo);
    if (!saved.is_ok()) return fail(saved);
    summary["phases"]["pack_and_save_s"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_save).count();
    summary["out"] = o.out;
    summary["file_bytes"] = directory_bytes(o.out);
  } else {
    summary["phases"]["pack_s"] = pack_seconds(run.result);
  }
  {
    double total = summary["phases"]["quantize_s"].get<double>();
    for (const char* k : {"pack_and_save_s", "pack_s"})
      if (summary["phases"].contains(k)) total += summary["phases"][k].get<double>();
    summary["phases"]["total_s"] = total;
  }
  if (!run.base_ppl.is_null()) summary["base_ppl"] = run.base_ppl;
  if (!run.quant_ppl.is_null()) summary["ppl"] = run.quant_ppl;
  add_metrics(record, summary, run);
  record.details = {{"summary", summary}, {"calibration", calibration_json(run)}, {"layers", layers}};
  record.seed = static_cast<int64_t>(o.seed);
  Status saved = save_record(record, o.common, o.model, app);
  if (!saved.is_ok()) return fail(saved);
  if (o.common.json) {
    const nlohmann::json j = {{"summary", summary}, {"layers", layers}, {"calibration", calibration_json(run)},
                              {"run_id", record.id}};
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    print_table(run.result, summary);
  }
  return 0;
}

// --method nf4: the options that apply to it (block size from --group, default 64).
Result<NF4QuantizeOptions> nf4_options(const QuantizeOptions& o, const CLI::App& app) {
  for (const char* flag : {"--bits", "--per-channel", "--act-order", "--static-groups", "--sym", "--asym",
                           "--synthetic", "--awq-grid", "--no-awq-clip", "--awq-duo-scaling", "--percdamp"})
    if (app.count(flag) > 0 && !(std::string_view(flag) == "--bits" && o.bits == 4))
      return invalid_argument("{} does not apply to --method nf4 (4-bit NormalFloat, absmax per --group block)", flag);
  NF4QuantizeOptions n;
  static_cast<QuantizeRunOptions&>(n) = o;
  n.block = app.count("--group") > 0 ? o.group : kNF4DefaultBlock;
  return n;
}

}  // namespace

Command make_quantize_command(CLI::App& root) {
  auto o = std::make_shared<QuantizeOptions>();
  CLI::App* app = root.add_subcommand("quantize", "weight-only post-training quantization: RTN, GPTQ, AWQ");
  app->add_option("model", o->model, "model directory (not with --synthetic)");
  app->add_option("out", o->out, "output directory (a compressed model)");
  app->add_option("--method", o->method, "rtn, gptq, awq or nf4 (data-free NormalFloat-4, block = --group, "
                                         "default 64)")->capture_default_str();
  app->add_option("--bits", o->bits, "weight bits: 2, 3, 4 or 8")->capture_default_str();
  app->add_option("--group", o->group, "input columns per scale group")->capture_default_str();
  app->add_flag("--per-channel", o->per_channel, "one scale per output row (no groups)");
  app->add_flag("--act-order", o->act_order, "GPTQ: quantize columns by decreasing Hessian diagonal (desc_act)");
  app->add_flag("--static-groups", o->static_groups, "GPTQ act-order: group grids from the original weights (no g_idx)");
  app->add_flag("--sym", o->sym, "symmetric grid (zero point 2^(bits-1))");
  app->add_flag("--asym", o->asym, "asymmetric grid (default)");
  app->add_option("--calib", o->calib, "calibration text/JSONL file or named dataset (c4, wiki, tiny, wikitext2, "
                                       "fixture-val), or none (RTN only)")->capture_default_str();
  app->add_option("--calib-samples", o->calib_samples, "calibration windows")->capture_default_str();
  app->add_option("--calib-seqlen", o->calib_seqlen, "tokens per window, BOS included (default min(512, model maximum), AWQ's; GPTQ papers use 2048)");
  app->add_option("--seed", o->seed, "calibration sampling seed")->capture_default_str();
  app->add_option("--percdamp", o->percdamp, "GPTQ damping, fraction of mean(diag H)")->capture_default_str();
  app->add_option("--block-size", o->block_size, "GPTQ columns per lazy batch update")->capture_default_str();
  app->add_flag("--no-true-sequential", o->no_true_sequential, "GPTQ/RTN: capture a block's inputs once");
  app->add_option("--awq-grid", o->awq_grid, "AWQ: scale exponents searched")->capture_default_str();
  app->add_flag("--no-awq-clip", o->no_awq_clip, "AWQ: skip the clipping search");
  app->add_flag("--awq-duo-scaling", o->awq_duo, "AWQ: divide the scales by mean relative |w|^(1-alpha) (AutoAWQ)");
  app->add_option("--override", o->overrides, "per-module spec PATTERN=VALUE, e.g. lm_head=w8, "
                                               "'model.layers.{0-1}.mlp.down_proj=w8', '*.o_proj=fp16'");
  app->add_option("--eval", o->eval, "perplexity datasets to measure after quantizing")->delimiter(',');
  app->add_flag("--eval-base", o->eval_base, "also measure the original model first");
  app->add_option("--eval-ctx", o->eval_ctx, "perplexity window")->capture_default_str();
  app->add_option("--limit-windows", o->limit_windows, "perplexity: first K windows only");
  app->add_flag("--overwrite", o->overwrite, "replace OUT if it exists");
  app->add_flag("--no-save", o->no_save, "measure only, write no OUT");
  app->add_option("--synthetic", o->synthetic, "quantize a random-weight model of this shape on the GPU (llama2-7b, "
                                                "llama3-8b, mistral-7b, llama2-13b, tiny) with random calibration ids; "
                                                "nothing is saved");
  app->add_option("--batch-tokens", o->batch_tokens, "calibration tokens per block forward (0: 8192 on the GPU, 2048 "
                                                     "on the CPU)")->capture_default_str();
  add_common_options(app, o->common);
  return {app, [o, app]() {
            if (o->method == "nf4") {
              if (o->model.empty()) return fail(invalid_argument("quantize: MODEL is required for --method nf4"));
              if (o->out.empty() && !o->no_save) return fail(invalid_argument("quantize: OUT is required (or --no-save)"));
              auto nf4 = nf4_options(*o, *app);
              return nf4.is_ok() ? run_quantize_nf4(*nf4, *app) : fail(nf4.status());
            }
            if (!o->synthetic.empty()) {
              // `compactor quantize --synthetic NAME [OUT]`: the one positional lands in MODEL.
              if (!o->out.empty())
                return fail(invalid_argument("--synthetic {} takes no MODEL directory (got '{}')", o->synthetic, o->model));
              if (!o->model.empty() && !o->no_save)
                std::fprintf(stderr, "quantize: --synthetic models are not saved (random weights, no files); '%s' is "
                                     "not written\n", o->model.c_str());
              o->model.clear();
              o->no_save = true;
            } else if (o->model.empty()) {
              return fail(invalid_argument("quantize: MODEL is required (or --synthetic NAME)"));
            }
            if (o->out.empty() && !o->no_save) return fail(invalid_argument("quantize: OUT is required (or --no-save)"));
            return run_quantize(*o, *app);
          }};
}

}  // namespace compactor::cli
