// Benchmark driver: the CPU path (host clock) and the physical-limit arithmetic; the CUDA path
// lives in cuda_bench.cpp. Test: build-*/tests/test_bench.
#include "bench/bench.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <random>

#include "bench/cuda_bench.h"
#include "bench/memory_plan.h"
#include "model/synthetic.h"

namespace compactor {

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct Timed {
  double prefill = 0, decode = 0;
};

// One prefill of `batch` random prompts followed by `gen` single-token decode steps.
Result<Timed> time_once(Model& model, int batch, const BenchConfig& cfg, std::mt19937& rng, int64_t* kv_bytes) {
  const int64_t vocab = model.config().vocab_size;
  std::uniform_int_distribution<int32_t> token(0, static_cast<int32_t>(vocab - 1));
  std::vector<int32_t> ids(static_cast<size_t>(batch) * cfg.prompt);
  for (auto& id : ids) id = token(rng);
  KvCache cache = model.make_kv_cache(batch, cfg.prompt + cfg.gen);
  *kv_bytes = std::max(*kv_bytes, cache.bytes());
  Backend& be = model.backend();
  Timed t;
  be.synchronize();
  auto t0 = std::chrono::steady_clock::now();
  RETURN_IF_ERROR(model.forward({ids.data(), BatchLayout{batch, cfg.prompt}, LogitsMode::kLast}, cache).status());
  be.synchronize();
  auto t1 = std::chrono::steady_clock::now();
  std::vector<int32_t> step(batch);
  for (int g = 0; g < cfg.gen; ++g) {
    for (auto& id : step) id = token(rng);
    RETURN_IF_ERROR(model.forward({step.data(), BatchLayout{batch, 1}, LogitsMode::kLast}, cache).status());
  }
  be.synchronize();
  auto t2 = std::chrono::steady_clock::now();
  t.prefill = std::chrono::duration<double>(t1 - t0).count();
  t.decode = std::chrono::duration<double>(t2 - t1).count();
  return t;
}

Result<BenchResult> run_bench_host(Model& model, const BenchConfig& cfg) {
  BenchResult result;
  result.timing = "host clock";
  result.weight_bytes = model_weight_bytes(model);
  result.quantized_weight_bytes = model_quantized_bytes(model);
  result.weight_format = weight_format_label(model);
  std::mt19937 rng(static_cast<uint32_t>(cfg.seed));
  const int act_bytes = dtype_size(model.backend().activation_dtype());
  for (int batch : cfg.batches) {
    BenchConfig warm = cfg;
    warm.gen = std::min(cfg.gen, 2);
    RETURN_IF_ERROR(time_once(model, batch, warm, rng, &result.peak_kv_bytes).status());
    std::vector<double> prefill, decode;
    for (int r = 0; r < cfg.repeats; ++r) {
      ASSIGN_OR_RETURN(Timed t, time_once(model, batch, cfg, rng, &result.peak_kv_bytes));
      prefill.push_back(t.prefill);
      decode.push_back(t.decode);
    }
    BenchPoint p;
    p.batch = batch;
    p.prompt = cfg.prompt;
    p.gen = cfg.gen;
    p.prefill_seconds = median(prefill);
    p.decode_seconds = median(decode);
    p.decode_seconds_min = *std::min_element(decode.begin(), decode.end());
    p.decode_seconds_max = *std::max_element(decode.begin(), decode.end());
    p.prefill_tokens_per_second = batch * cfg.prompt / p.prefill_seconds;
    p.decode_tokens_per_second = batch * cfg.gen / p.decode_seconds;
    p.ms_per_decode_step = 1000.0 * p.decode_seconds / cfg.gen;
    p.bytes_per_decode_step = decode_step_bytes(model.config(), result.weight_bytes, act_bytes, batch,
                                                cfg.prompt + (cfg.gen + 1) / 2.0);
    result.points.push_back(p);
  }
  return result;
}

}  // namespace

std::string weight_format_label(const Model& model) {
  const std::string dense(dtype_name(model.weights().embed.dtype));
  std::map<std::string, int> formats;
  int packed = 0, total = 0;
  const QuantizationConfig* q = model.quantization();
  for (const auto& [name, w] : model.named_linears()) {
    ++total;
    if (!w->quantized()) continue;
    ++packed;
    const ModuleQuantization* mq = q != nullptr ? q->find(name) : nullptr;
    std::string label = fmt::format("{} {}", format_name(w->format),
                                    w->group_size == 0 ? std::string("per-channel") : fmt::format("g{}", w->group_size));
    if (mq != nullptr && format_is_int(w->format)) label += mq->spec.symmetric ? " sym" : " asym";
    if (w->g_idx.data != nullptr) label += " act-order";
    ++formats[label];
  }
  if (packed == 0) return "dense " + dense;
  std::string labels;
  for (const auto& [label, count] : formats) labels += (labels.empty() ? "" : ", ") + label;
  const bool head_packed = model.weights().lm_head.quantized();
  return fmt::format("{}: {} of {} linears packed (embeddings{} dense {})", labels, packed, total,
                     head_packed ? "" : ", lm_head", dense);
}

double prefill_flops(const ModelConfig& c, int batch, int tokens, int past) {
  const double d = static_cast<double>(c.hidden_size), f = static_cast<double>(c.intermediate_size);
  const double q_dim = static_cast<double>(c.num_heads * c.head_dim), kv_dim = static_cast<double>(c.num_kv_heads * c.head_dim);
  const double block_params = 2 * d * q_dim + 2 * d * kv_dim + 3 * d * f;
  const double rows = static_cast<double>(batch) * tokens;
  double flops = 2.0 * block_params * c.num_layers * rows + 2.0 * d * static_cast<double>(c.vocab_size) * batch;
  // Query t sees past + t + 1 keys: Σ = T·past + T(T+1)/2; QKᵀ and PV cost 2·Dh each per key.
  const double keys = static_cast<double>(tokens) * past + static_cast<double>(tokens) * (tokens + 1) / 2.0;
  flops += 4.0 * static_cast<double>(c.head_dim) * c.num_heads * c.num_layers * keys * batch;
  return flops;
}

double decode_step_bytes(const ModelConfig& c, int64_t weight_bytes, int act_bytes, int batch, double keys) {
  const double embed = static_cast<double>(c.vocab_size) * c.hidden_size * act_bytes;
  const double weights = static_cast<double>(weight_bytes) - (c.tie_word_embeddings ? 0.0 : embed) +
                         static_cast<double>(batch) * c.hidden_size * act_bytes;
  const double kv = static_cast<double>(batch) * keys * c.num_layers * 2.0 * c.num_kv_heads * c.head_dim * act_bytes;
  return weights + kv;
}

Result<BenchResult> run_bench(Model& model, const BenchConfig& cfg) {
  if (cfg.prompt < 1 || cfg.gen < 1 || cfg.repeats < 1)
    return invalid_argument("bench: --prompt, --gen and --repeats must be >= 1");
  for (int batch : cfg.batches)
    if (batch < 1) return invalid_argument("bench: batch sizes must be >= 1 (got {})", batch);
  for (int t : cfg.ttft_prompts)
    if (t < 1) return invalid_argument("bench: --ttft-prompts must be >= 1 (got {})", t);
  const int64_t max_pos = model.config().max_position_embeddings;
  if (cfg.prompt + cfg.gen + 1 > max_pos)
    return invalid_argument("bench: --prompt {} + --gen {} (+1 warm-up step) exceeds the model's maximum context {}",
                            cfg.prompt, cfg.gen, max_pos);
  for (int t : cfg.ttft_prompts)
    if (t > max_pos) return invalid_argument("bench: TTFT prompt {} exceeds the model's maximum context {}", t, max_pos);
  if (!(cfg.hbm_bytes_per_second > 0) || !(cfg.peak_flops > 0))
    return invalid_argument("bench: --hbm-bandwidth and --peak-tflops must be > 0");
  if (model.backend().device() == Device::kCuda) return run_bench_cuda(model, cfg);
  if (!cfg.ttft_prompts.empty()) return unsupported("bench: --ttft-prompts needs --device cuda");
  return run_bench_host(model, cfg);
}

}  // namespace compactor
