// compactor bench [MODEL | --synthetic NAME] [--device cpu|cuda] [--batch 1,8,32] [--prompt N] [--gen N]
//   [--repeats R] [--ttft-prompts 512,2048] [--dtype bf16|f16] [--graphs on|off]
//   [--hbm-gbps 3000] [--peak-tflops 989] [--gemv custom|cublas] [--attention auto|tc|cuda-cores] [--fuse on|off]
//   [--quant w4g128 [--sym] [--act-order] [--quant-lm-head] [--compare-dense]] [--quant-kernel tc|cuda-cores]
//   [--pdl on|off] [--stream-weights on|off] [--out FILE.json]
// Prefill and decode throughput, time to first token, peak memory and the fraction of the
// physical limit reached, as a table or JSON. --synthetic builds a model with the exact shapes of
// a known architecture and random weights on the GPU (no files). On CUDA the defaults are the
// issue's points: TTFT at 512 and 2048 tokens, decode at batch 1/8/32 with a 512-token prompt
// and 128 generated tokens.
// --quant PRESET (with --synthetic): every block linear is made directly in packed form on the
// GPU (random codes, scales for N(0, 0.02²) weights; model/synthetic.h), embeddings and lm_head
// stay dense unless --quant-lm-head. --compare-dense first benchmarks the dense synthetic model of
// the same shapes in the same process (then frees it) and reports quantized/dense decode tok/s.
// CPU: only --synthetic tiny (host-filled), for tests.
#include <cstdio>
#include <fstream>
#include <optional>
#include <new>

#include "bench/bench.h"
#include "bench/memory_plan.h"
#include "common.h"
#include "core/hardware.h"
#include "model/synthetic.h"
#ifdef COMPACTOR_HAS_CUDA
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/fill_words.h"
#include "bench/op_profile.h"
#endif

namespace compactor::cli {

namespace {
struct BenchCliOptions {
  std::string model, synthetic, dtype = "bf16", graphs = "on", out, gemv = "custom", attention = "auto", fuse = "on",
              quant_kernel = "tc", pdl = "on", stream_weights = "on",
              quant_gemm = "fused";
  std::vector<int> batches{1};
  std::vector<int> ttft_prompts;
  int prompt = 128, gen = 32, repeats = 3;
  int attention_splits = 0;  // CUDA: 0 = the planner's heuristic
  double hbm_gbps = 3000, peak_tflops = 989;
  bool breakdown = false;
  std::string quant;  // kQuantPresets name (--synthetic only)
  bool sym = false, act_order = false, quant_lm_head = false, compare_dense = false;
  uint64_t seed = 0;
  CommonOptions common;
};

nlohmann::json to_json(const BenchResult& r, const BenchConfig& cfg) {
  nlohmann::json ttft = nlohmann::json::array(), points = nlohmann::json::array();
  for (const TtftPoint& t : r.ttft)
    ttft.push_back({{"prompt", t.prompt}, {"ttft_ms", t.ms}, {"tflop", t.flops / 1e12},
                    {"tflops_per_second", t.flops / (t.ms * 1e-3) / 1e12}, {"fraction_of_peak", t.fraction}});
  for (const BenchPoint& p : r.points)
    points.push_back({{"batch", p.batch}, {"prompt", p.prompt}, {"gen", p.gen},
                      {"ttft_ms", p.prefill_seconds * 1000}, {"prefill_tokens_per_second", p.prefill_tokens_per_second},
                      {"prefill_fraction_of_peak", p.prefill_fraction},
                      {"decode_tokens_per_second", p.decode_tokens_per_second},
                      {"ms_per_decode_step", p.ms_per_decode_step},
                      {"decode_ms_per_step_min", 1000 * p.decode_seconds_min / p.gen},
                      {"decode_ms_per_step_max", 1000 * p.decode_seconds_max / p.gen},
                      {"bytes_per_decode_step", p.bytes_per_decode_step},
                      {"decode_fraction_of_bandwidth", p.decode_fraction}, {"cuda_graph", p.cuda_graph},
                      {"graph_error", p.graph_error}});
  return {{"ttft", ttft},
          {"points", points},
          {"weight_format", r.weight_format},
          {"weight_bytes", r.weight_bytes},
          {"quantized_weight_bytes", r.quantized_weight_bytes},
          {"runtime_weight_bytes", r.runtime_weight_bytes},
          {"peak_kv_bytes", r.peak_kv_bytes},
          {"peak_device_bytes", r.peak_device_bytes},
          {"device_total_bytes", r.device_total_bytes},
          {"peak_rss_bytes", peak_rss_bytes()},
          {"timing", r.timing},
          {"repeats", cfg.repeats},
          {"hbm_bytes_per_second", cfg.hbm_bytes_per_second},
          {"peak_flops", cfg.peak_flops},
          {"limits", "decode: (weights + KV bytes read per step) / step time / HBM bandwidth (packed linears: "
                     "qweight + scales + qzeros bytes); prefill: (2 * linear params * T + attention FLOPs) / time / "
                     "peak (default: H100 SXM dense bf16, 989 TFLOP/s)"},
          {"notes", r.notes}};
}

void print_table(const nlohmann::json& j, const BenchResult& r) {
  std::printf("device %s (%s), timing %s, options %s\n", j["device"].get<std::string>().c_str(),
              j["model"].get<std::string>().c_str(), r.timing.c_str(), j["options"].dump().c_str());
  std::printf("weight format: %s\n", r.weight_format.c_str());
  if (r.quantized_weight_bytes > 0) {
    std::printf("packed linears %.2f GB (qweight + scales + qzeros: the decode bound counts these bytes)",
                r.quantized_weight_bytes / 1e9);
    if (r.runtime_weight_bytes > 0)
      std::printf("; the CUDA backend adds %.2f GB (repacked copies for the fused GEMV + dequantize scratch)",
                  r.runtime_weight_bytes / 1e9);
    std::printf("\n");
  }
  std::printf("weights %.2f GB, peak KV %.2f GB, peak device memory %.2f GB of %.2f GB, peak RSS %.2f GB\n",
              r.weight_bytes / 1e9, r.peak_kv_bytes / 1e9, r.peak_device_bytes / 1e9, r.device_total_bytes / 1e9,
              peak_rss_bytes() / 1e9);
  if (!r.ttft.empty()) std::printf("%8s %10s %10s %10s\n", "prompt", "TTFT ms", "TFLOP/s", "of peak");
  for (const TtftPoint& t : r.ttft)
    std::printf("%8d %10.2f %10.1f %9.1f%%\n", t.prompt, t.ms, t.flops / (t.ms * 1e-3) / 1e12, 100 * t.fraction);
  std::printf("%6s %7s %5s %11s %14s %13s %9s %9s %6s\n", "batch", "prompt", "gen", "prefill ms", "prefill tok/s",
              "decode tok/s", "ms/step", "of HBM", "graph");
  for (const BenchPoint& p : r.points)
    std::printf("%6d %7d %5d %11.2f %14.1f %13.1f %9.3f %8.1f%% %6s\n", p.batch, p.prompt, p.gen,
                p.prefill_seconds * 1000, p.prefill_tokens_per_second, p.decode_tokens_per_second, p.ms_per_decode_step,
                100 * p.decode_fraction, p.cuda_graph ? "yes" : "no");
  for (const std::string& n : r.notes) std::printf("note: %s\n", n.c_str());
}

// The points on CUDA unless the flags were given.
BenchConfig make_config(const BenchCliOptions& o, const CLI::App& app, bool cuda) {
  BenchConfig cfg;
  cfg.batches = o.batches;
  cfg.prompt = o.prompt;
  cfg.gen = o.gen;
  cfg.repeats = o.repeats;
  cfg.seed = o.seed;
  cfg.ttft_prompts = o.ttft_prompts;
  cfg.hbm_bytes_per_second = o.hbm_gbps * 1e9;
  cfg.peak_flops = o.peak_tflops * 1e12;
  cfg.cuda_graphs = o.graphs != "off";
  if (cuda) {
    if (app.count("--batch") == 0) cfg.batches = {1, 8, 32};
    if (app.count("--prompt") == 0) cfg.prompt = 512;
    if (app.count("--gen") == 0) cfg.gen = 128;
    if (app.count("--repeats") == 0) cfg.repeats = 5;
    if (app.count("--ttft-prompts") == 0) cfg.ttft_prompts = {512, 2048};
  }
  return cfg;
}

struct BenchModel {
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Model> model;
  std::string name;
};

#ifdef COMPACTOR_HAS_CUDA
// The value named `value` among `choices`; otherwise an error naming the flag and the choices
// ("--pdl x: expected on or off").
template <typename E>
Result<E> choose(const char* flag, const std::string& value, std::initializer_list<std::pair<const char*, E>> choices) {
  std::string names;
  size_t i = 0;
  for (const auto& [name, e] : choices) {
    if (value == name) return e;
    names += (i == 0 ? "" : i + 1 == choices.size() ? " or " : ", ") + std::string(name);
    ++i;
  }
  return invalid_argument("{} {}: expected {}", flag, value, names);
}

Result<std::unique_ptr<CudaBackend>> make_cuda(const BenchCliOptions& o) {
  CudaBackendOptions opts;
  if (o.dtype == "bf16") opts.activation_dtype = DType::kBF16;
  else if (o.dtype == "f16") opts.activation_dtype = DType::kF16;
  else return unsupported("--dtype {}: the CUDA backend computes in bf16 or f16", o.dtype);
  ASSIGN_OR_RETURN(opts.matmul_kernel, (choose<MatmulKernel>("--gemv", o.gemv, {{"custom", MatmulKernel::kAuto},
                                                                                {"cublas", MatmulKernel::kCublas}})));
  ASSIGN_OR_RETURN(opts.attention_kernel,
                   (choose<AttentionKernel>("--attention", o.attention,
                                            {{"auto", AttentionKernel::kAuto},
                                             {"tc", AttentionKernel::kTensorCores},
                                             {"cuda-cores", AttentionKernel::kCudaCores}})));
  ASSIGN_OR_RETURN(opts.fuse, (choose<FuseOps>("--fuse", o.fuse, {{"on", FuseOps::kOn}, {"off", FuseOps::kOff}})));
  ASSIGN_OR_RETURN(opts.quant_kernel, (choose<QuantKernel>("--quant-kernel", o.quant_kernel,
                                                           {{"tc", QuantKernel::kTensorCores},
                                                            {"cuda-cores", QuantKernel::kCudaCores}})));
  if (o.attention_splits < 0) return invalid_argument("--attention-splits {}: expected 0 (auto) or more", o.attention_splits);
  opts.attention_splits = o.attention_splits;
  ASSIGN_OR_RETURN(opts.dependent_launch, (choose<DependentLaunch>("--pdl", o.pdl, {{"on", DependentLaunch::kOn},
                                                                                    {"off", DependentLaunch::kOff}})));
  ASSIGN_OR_RETURN(opts.weight_streaming,
                   (choose<WeightStreaming>("--stream-weights", o.stream_weights,
                                            {{"on", WeightStreaming::kOn}, {"off", WeightStreaming::kOff}})));
  ASSIGN_OR_RETURN(opts.quant_gemm, (choose<QuantGemm>("--quant-gemm", o.quant_gemm, {{"fused", QuantGemm::kFused},
                                                                                     {"dequant", QuantGemm::kDequantize}})));
  return CudaBackend::create(opts);
}
#endif

Result<std::optional<SyntheticQuant>> parse_quant(const BenchCliOptions& o) {
  if (o.quant.empty()) {
    if (o.sym || o.act_order || o.quant_lm_head || o.compare_dense)
      return invalid_argument("--sym, --act-order, --quant-lm-head and --compare-dense need --quant PRESET");
    return std::optional<SyntheticQuant>();
  }
  if (o.synthetic.empty())
    return invalid_argument("--quant {}: only synthetic models are made packed (use --synthetic NAME; quantize a "
                            "checkpoint with `compactor quantize`)", o.quant);
  ASSIGN_OR_RETURN(SyntheticQuant q, synthetic_quant(o.quant, o.sym, o.act_order, o.quant_lm_head));
  return std::optional<SyntheticQuant>(q);
}

// A synthetic model (dense when quant is nullptr): the memory for the weights is checked before
// anything is allocated.
Result<BenchModel> make_synthetic(const BenchCliOptions& o, const SyntheticQuant* quant) {
  ASSIGN_OR_RETURN(ModelConfig cfg, synthetic_config(o.synthetic));
  BenchModel bm;
  bm.name = "synthetic " + o.synthetic + (quant != nullptr ? " " + quant->preset : std::string());
  if (o.common.device != "cuda" && o.common.device != "gpu") {
    if (o.synthetic != "tiny")
      return unsupported("--synthetic {}: synthetic models are made on the GPU; use --device cuda (the CPU takes "
                         "only --synthetic tiny)", o.synthetic);
    apply_threads(o.common.threads);
    ASSIGN_OR_RETURN(bm.backend, make_backend(BackendKind::kCpu));
    Backend* cpu = bm.backend.get();
    ASSIGN_OR_RETURN(bm.model, make_synthetic_model(
                                   cfg, *cpu, quant, o.seed,
                                   [&](View v, uint64_t stream, float mean, float stddev) {
                                     fill_normal_host(*cpu, v, stream, mean, stddev);
                                   },
                                   [&](View v, uint64_t stream) { fill_words_host(*cpu, v, stream); }));
    return bm;
  }
#ifdef COMPACTOR_HAS_CUDA
  ASSIGN_OR_RETURN(std::unique_ptr<CudaBackend> be, make_cuda(o));
  be->reset_peak_memory();  // the statistics are per process: a --compare-dense run before this one is freed
  const int act_bytes = dtype_size(be->activation_dtype());
  const int64_t weights = quant != nullptr ? estimate_quantized_weight_bytes(cfg, quant->spec, quant->act_order,
                                                                             quant->lm_head, act_bytes)
                                           : estimate_weight_bytes(cfg, act_bytes);
  const int64_t runtime = quant != nullptr ? estimate_quantized_runtime_bytes(cfg, quant->spec, quant->act_order,
                                                                              quant->lm_head, act_bytes)
                                           : 0;
  const CudaMemoryInfo mem = be->memory_info();
  if (weights + runtime + (int64_t{512} << 20) > mem.free_bytes)
    return Status(StatusCode::kOutOfMemory,
                  fmt::format("--synthetic {}: the weights need {:.2f} GB (+ {:.2f} GB at run time) but the GPU has "
                              "{:.2f} GB free", o.synthetic, weights / 1e9, runtime / 1e9, mem.free_bytes / 1e9));
  CudaBackend* cuda = be.get();
  Status fill_status;
  auto fill = [&](View v, uint64_t stream, float mean, float stddev) {
    if (fill_status.is_ok()) fill_status = cuda->fill_normal(v, stream, mean, stddev);
  };
  auto fill_words = [&](View v, uint64_t stream) {
    if (fill_status.is_ok()) fill_status = fill_random_words_cuda(v, stream, cuda->stream());
  };
  std::unique_ptr<Model> model;  // declared after `be`: freed before the backend on every path
  try {
    ASSIGN_OR_RETURN(model, make_synthetic_model(cfg, *cuda, quant, o.seed, fill, fill_words));
  } catch (const std::bad_alloc&) {
    return Status(StatusCode::kOutOfMemory, fmt::format("--synthetic {}: out of GPU memory placing the weights", o.synthetic));
  }
  RETURN_IF_ERROR(fill_status);
  be->synchronize();
  bm.backend = std::move(be);
  bm.model = std::move(model);
  return bm;
#else
  return unsupported("--synthetic: this build of compactor has no CUDA backend");
#endif
}

Result<BenchModel> make_bench_model(const BenchCliOptions& o, const SyntheticQuant* quant) {
  if (!o.synthetic.empty()) {
    if (!o.model.empty()) return invalid_argument("bench: give a MODEL directory or --synthetic, not both");
    return make_synthetic(o, quant);
  }
  if (o.model.empty()) return invalid_argument("bench: a MODEL directory or --synthetic NAME is required");
  BenchModel bm;
  bm.name = o.model;
#ifdef COMPACTOR_HAS_CUDA
  if (o.common.device == "cuda" || o.common.device == "gpu") {
    ASSIGN_OR_RETURN(std::unique_ptr<CudaBackend> be, make_cuda(o));
    ASSIGN_OR_RETURN(ModelConfig cfg, load_model_config(o.model));
    const int64_t weights = estimate_weight_bytes(cfg, dtype_size(be->activation_dtype()));
    const int64_t free_bytes = be->memory_info().free_bytes;
    if (weights + (int64_t{512} << 20) > free_bytes)
      return Status(StatusCode::kOutOfMemory, fmt::format("{}: the weights need {:.2f} GB but the GPU has {:.2f} GB free",
                                                          o.model, weights / 1e9, free_bytes / 1e9));
    bm.backend = std::move(be);
    try {
      ASSIGN_OR_RETURN(bm.model, Model::load(o.model, *bm.backend));
    } catch (const std::bad_alloc&) {
      return Status(StatusCode::kOutOfMemory, fmt::format("{}: out of GPU memory placing the weights", o.model));
    }
    return bm;
  }
#endif
  apply_threads(o.common.threads);
  ASSIGN_OR_RETURN(BackendKind kind, backend_kind_from_name(o.common.device));
  ASSIGN_OR_RETURN(bm.backend, make_backend(kind));
  ASSIGN_OR_RETURN(bm.model, Model::load(o.model, *bm.backend));
  return bm;
}

#ifdef COMPACTOR_HAS_CUDA
// --breakdown: one layer's ops timed at the benchmark's shapes; printed and added to the JSON.
Result<nlohmann::json> run_breakdown(Model& model, Backend& backend, const BenchConfig& cfg) {
  auto* be = dynamic_cast<CudaBackend*>(&backend);
  if (be == nullptr) return unsupported("--breakdown needs --device cuda");
  std::vector<ProfileShape> shapes;
  for (int t : cfg.ttft_prompts) shapes.push_back({1, t, 0});
  const int mid = cfg.prompt + cfg.gen / 2;
  for (int b : cfg.batches) shapes.push_back({b, 1, mid});
  ASSIGN_OR_RETURN(std::vector<LayerProfile> profiles, profile_layer(model, *be, shapes));
  nlohmann::json j = nlohmann::json::array();
  const int layers = static_cast<int>(model.config().num_layers);
  for (const LayerProfile& p : profiles) {
    std::printf("-- one layer, %s (past %d): %s\n", p.phase.c_str(), p.past, "us, GB/s, TFLOP/s");
    double layer_us = 0, head_us = 0;
    nlohmann::json ops = nlohmann::json::array();
    for (const OpTiming& o : p.ops) {
      const bool head = o.op.rfind("lm head", 0) == 0;
      (head ? head_us : layer_us) += o.us;
      std::printf("  %-20s %9.2f us %8.0f GB/s %7.1f TFLOP/s\n", o.op.c_str(), o.us, o.bytes / (o.us * 1e3),
                  o.flops / (o.us * 1e6));
      ops.push_back({{"op", o.op}, {"us", o.us}, {"bytes", o.bytes}, {"flops", o.flops}});
    }
    std::printf("  layer %.1f us x %d layers + lm head %.1f us = %.3f ms\n", layer_us, layers, head_us,
                (layer_us * layers + head_us) / 1e3);
    j.push_back({{"phase", p.phase}, {"batch", p.batch}, {"tokens", p.tokens}, {"past", p.past}, {"ops", ops},
                 {"model_ms", (layer_us * layers + head_us) / 1e3}});
  }
  return j;
}
#endif

Status write_json(const std::string& path, const nlohmann::json& j) {
  std::ofstream out(path);
  if (!out) return io_error("--out {}: cannot open for writing", path);
  out << j.dump(2) << "\n";
  if (!out) return io_error("--out {}: write failed", path);
  return Status::ok();
}

// One model benchmarked; the model and its backend are freed when this returns.
struct BenchRun {
  BenchConfig cfg;
  BenchResult result;
  nlohmann::json json;
};

Result<BenchRun> bench_one(const BenchCliOptions& o, const CLI::App& app, const SyntheticQuant* quant, bool breakdown) {
  ASSIGN_OR_RETURN(BenchModel bm, make_bench_model(o, quant));
  BenchRun run;
  run.cfg = make_config(o, app, bm.backend->device() == Device::kCuda);
  nlohmann::json profile;
  if (breakdown) {
#ifdef COMPACTOR_HAS_CUDA
    ASSIGN_OR_RETURN(profile, run_breakdown(*bm.model, *bm.backend, run.cfg));
#else
    return unsupported("--breakdown needs a CUDA build");
#endif
  }
  ASSIGN_OR_RETURN(run.result, run_bench(*bm.model, run.cfg));
  run.json = to_json(run.result, run.cfg);
  if (!profile.is_null()) run.json["breakdown"] = profile;
  run.json["device"] = bm.backend->name();
  run.json["model"] = bm.name;
  run.json["options"] = {{"dtype", o.dtype}, {"graphs", o.graphs}, {"gemv", o.gemv}, {"attention", o.attention},
                         {"fuse", o.fuse}, {"prompt", run.cfg.prompt}, {"gen", run.cfg.gen},
                         {"batches", run.cfg.batches}, {"ttft_prompts", run.cfg.ttft_prompts},
                         {"quant", quant != nullptr ? quant->preset : std::string("none")},
                         {"quant_kernel", o.quant_kernel}, {"attention_splits", o.attention_splits},
                         {"pdl", o.pdl}, {"stream_weights", o.stream_weights},
                         {"quant_gemm", o.quant_gemm}};
  if (quant != nullptr) {
    run.json["options"]["sym"] = quant->spec.symmetric;
    run.json["options"]["act_order"] = quant->act_order;
    run.json["options"]["quant_lm_head"] = quant->lm_head;
    run.json["quantization"] = {{"preset", quant->preset}, {"format", format_name(quant->format)},
                                {"bits", quant->spec.bits}, {"group_size", quant->spec.group_size},
                                {"sym", quant->spec.symmetric}, {"act_order", quant->act_order},
                                {"lm_head", quant->lm_head}, {"label", quant->format_label()}};
  }
  return run;
}

// Quantized / dense decode tok/s per batch size both runs measured.
nlohmann::json speedups(const BenchResult& quant, const BenchResult& dense) {
  nlohmann::json out = nlohmann::json::array();
  for (const BenchPoint& q : quant.points)
    for (const BenchPoint& d : dense.points)
      if (q.batch == d.batch && d.decode_tokens_per_second > 0)
        out.push_back({{"batch", q.batch}, {"dense_decode_tokens_per_second", d.decode_tokens_per_second},
                       {"quant_decode_tokens_per_second", q.decode_tokens_per_second},
                       {"decode_speedup", q.decode_tokens_per_second / d.decode_tokens_per_second},
                       {"dense_ttft_ms", d.prefill_seconds * 1000}, {"quant_ttft_ms", q.prefill_seconds * 1000}});
  return out;
}

int run(const BenchCliOptions& o, const CLI::App& app) {
  if (o.graphs != "on" && o.graphs != "off") return fail(invalid_argument("--graphs {}: expected on or off", o.graphs));
  auto quant = parse_quant(o);
  if (!quant) return fail(quant.status());
  const SyntheticQuant* q = quant->has_value() ? &**quant : nullptr;
  RunRecord record = new_run_record("bench");
  std::optional<BenchRun> dense;
  if (o.compare_dense) {  // first, so its weights are freed before the quantized model is made
    auto d = bench_one(o, app, nullptr, false);
    if (!d) return fail(d.status().with_context("--compare-dense (the dense run)"));
    dense = std::move(*d);
  }
  auto main_run = bench_one(o, app, q, o.breakdown);
  if (!main_run) return fail(main_run.status());
  const BenchResult& r = main_run->result;
  nlohmann::json j = main_run->json;
  j["machine"] = to_json(detect_hardware());
  nlohmann::json ratios;
  if (dense) {
    ratios = speedups(r, dense->result);
    j["dense"] = dense->json;
    j["decode_speedup_vs_dense"] = ratios;
  }
  for (const TtftPoint& t : r.ttft)
    record.metrics.push_back(Metric{"ttft" + std::to_string(t.prompt) + "_ms", t.ms, {}, {}, {}, "ms"});
  for (const BenchPoint& p : r.points) {
    const std::string b = "b" + std::to_string(p.batch);
    record.metrics.push_back(Metric{b + ".ttft_ms", p.prefill_seconds * 1000, {}, {}, {}, "ms"});
    record.metrics.push_back(Metric{b + ".prefill_tps", p.prefill_tokens_per_second, {}, {}, {}, "tokens/s"});
    record.metrics.push_back(Metric{b + ".decode_tps", p.decode_tokens_per_second, {}, {}, {}, "tokens/s"});
  }
  for (const auto& x : ratios)
    record.metrics.push_back(Metric{"b" + std::to_string(x["batch"].get<int>()) + ".decode_speedup_vs_dense",
                                    x["decode_speedup"].get<double>(), {}, {}, {}, "x"});
  record.metrics.push_back(Metric{"peak_rss_bytes", static_cast<double>(peak_rss_bytes()), {}, {}, {}, "bytes"});
  record.metrics.push_back(Metric{"peak_device_bytes", static_cast<double>(r.peak_device_bytes), {}, {}, {}, "bytes"});
  record.metrics.push_back(Metric{"weight_bytes", static_cast<double>(r.weight_bytes), {}, {}, {}, "bytes"});
  record.details = j;
  Status saved = save_record(record, o.common, o.model, app);
  if (!saved.is_ok()) return fail(saved);
  if (!o.out.empty()) {
    Status written = write_json(o.out, j);
    if (!written.is_ok()) return fail(written);
  }
  if (o.common.json) {
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  if (dense) {
    std::printf("== dense reference (same shapes, same process, freed before the quantized run)\n");
    print_table(dense->json, dense->result);
    std::printf("== %s\n", j["model"].get<std::string>().c_str());
  }
  print_table(j, r);
  if (dense) {
    std::printf("%6s %14s %14s %9s\n", "batch", "dense tok/s", "quant tok/s", "speedup");
    for (const auto& x : ratios)
      std::printf("%6d %14.1f %14.1f %8.2fx\n", x["batch"].get<int>(), x["dense_decode_tokens_per_second"].get<double>(),
                  x["quant_decode_tokens_per_second"].get<double>(), x["decode_speedup"].get<double>());
  }
  return 0;
}
}  // namespace

Command make_bench_command(CLI::App& root) {
  auto opts = std::make_shared<BenchCliOptions>();
  CLI::App* app = root.add_subcommand("bench", "measure prefill/decode speed and memory");
  app->add_option("model", opts->model, "model directory (or --synthetic NAME)");
  app->add_option("--synthetic", opts->synthetic,
                  "random weights with the shapes of llama2-7b | llama3-8b | mistral-7b | llama2-13b (CUDA only)");
  app->add_option("--batch", opts->batches, "comma-separated batch sizes (CUDA default 1,8,32)")
      ->delimiter(',')
      ->capture_default_str();
  app->add_option("--prompt", opts->prompt, "prompt tokens per sequence (CUDA default 512)")->capture_default_str();
  app->add_option("--gen", opts->gen, "generated tokens per sequence (CUDA default 128)")->capture_default_str();
  app->add_option("--repeats", opts->repeats, "timed repeats, median reported (CUDA default 5)")->capture_default_str();
  app->add_option("--ttft-prompts", opts->ttft_prompts, "batch-1 TTFT prompt lengths (CUDA default 512,2048)")
      ->delimiter(',');
  app->add_option("--seed", opts->seed, "seed of the random token ids and synthetic weights")->capture_default_str();
  app->add_option("--dtype", opts->dtype, "CUDA activation dtype: bf16 or f16")->capture_default_str();
  app->add_option("--graphs", opts->graphs, "CUDA graphs for decode steps: on or off")->capture_default_str();
  app->add_option("--hbm-gbps", opts->hbm_gbps, "memory bandwidth for the decode bound, GB/s (H100 SXM: 3000)")
      ->capture_default_str();
  app->add_option("--peak-tflops", opts->peak_tflops, "tensor-core peak for the prefill bound (H100 SXM bf16: 989)")
      ->capture_default_str();
  app->add_option("--gemv", opts->gemv, "CUDA decode matmuls (T <= 4): custom GEMV kernel or cublas")
      ->capture_default_str();
  app->add_option("--attention", opts->attention, "CUDA attention: auto (tensor cores, Dh 64/128: the decode kernel at <= 8 query rows per kv head), tc (the 16-rows-per-warp tensor-core kernel for every shape) or cuda-cores")
      ->capture_default_str();
  app->add_option("--fuse", opts->fuse, "CUDA: q/k/v and gate/up GEMVs and rope+KV append as one launch each: on or off")
      ->capture_default_str();
  app->add_option("--attention-splits", opts->attention_splits,
                  "CUDA: key splits of decode attention (flash-decoding); 0 = the planner's choice")
      ->capture_default_str();
  app->add_option("--quant-kernel", opts->quant_kernel,
                  "CUDA: fused kernel for packed int4, int8 (no act-order) and NF4 (blocks >= 64) weights: tc "
                  "(tensor cores, up to 32 rows) or cuda-cores (up to 8 rows); more rows: --quant-gemm")
      ->capture_default_str();
  app->add_option("--pdl", opts->pdl,
                  "CUDA (compute capability >= 9.0): programmatic dependent launches, each kernel starting while "
                  "the previous one drains: on or off")
      ->capture_default_str();
  app->add_option("--stream-weights", opts->stream_weights,
                  "CUDA (compute capability >= 9.0): tensor-core GEMVs of up to 16 rows stream weights into shared "
                  "memory by TMA bulk copies: on or off (the per-lane kernel)")
      ->capture_default_str();
  app->add_option("--quant-gemm", opts->quant_gemm,
                  "CUDA (compute capability 9.0): int4 weights at more than 32 rows (prefill): "
                  "fused (the mixed-input wgmma GEMM) or dequant (dequantize + cuBLAS)")
      ->capture_default_str();
  app->add_flag("--breakdown", opts->breakdown, "CUDA: also time each op of one layer at the benchmark's shapes");
  app->add_option("--quant", opts->quant,
                  "with --synthetic: block linears packed in this preset (w8 w8g128 w4 w4g128 w4g64 w4g32 w3g128 w3g64 "
                  "w3g32 w2g128 w2g64 w2g32 w2g16); embeddings and lm_head stay dense");
  app->add_flag("--sym", opts->sym, "with --quant: symmetric (zero point 2^(bits-1))");
  app->add_flag("--act-order", opts->act_order, "with --quant: act-order (random g_idx permutation)");
  app->add_flag("--quant-lm-head", opts->quant_lm_head, "with --quant: pack lm_head too");
  app->add_flag("--compare-dense", opts->compare_dense,
                "with --quant: benchmark the dense synthetic model first (same process, then freed) and report the "
                "quantized/dense decode speedup per batch");
  app->add_option("--out", opts->out, "also write the JSON result to this file (e.g. bench/results/NAME.json)");
  add_common_options(app, opts->common);
  return {app, [opts, app]() { return run(*opts, *app); }};
}

}  // namespace compactor::cli
