#include "bench/bench.h"

#include <algorithm>
#include <chrono>
#include <random>

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

}  // namespace

Result<BenchResult> run_bench(Model& model, const BenchConfig& cfg) {
  if (cfg.prompt < 1 || cfg.gen < 1 || cfg.repeats < 1)
    return invalid_argument("bench: --prompt, --gen and --repeats must be >= 1");
  if (cfg.prompt + cfg.gen > model.config().max_position_embeddings)
    return invalid_argument("bench: --prompt {} + --gen {} exceeds the model's maximum context {}", cfg.prompt, cfg.gen,
                            model.config().max_position_embeddings);
  BenchResult result;
  for (const std::string& name : model.files().names()) result.weight_bytes += model.files().find(name)->view().bytes();
  std::mt19937 rng(static_cast<uint32_t>(cfg.seed));
  for (int batch : cfg.batches) {
    if (batch < 1) return invalid_argument("bench: batch sizes must be >= 1 (got {})", batch);
    BenchConfig warm = cfg;
    warm.gen = std::min(cfg.gen, 2);
    RETURN_IF_ERROR(time_once(model, batch, warm, rng, &result.peak_kv_bytes).status());
    std::vector<double> prefill, decode;
    for (int r = 0; r < cfg.repeats; ++r) {
      ASSIGN_OR_RETURN(Timed t, time_once(model, batch, cfg, rng, &result.peak_kv_bytes));
      prefill.push_back(t.prefill);
      decode.push_back(t.decode);
    }
    BenchPoint p{batch, cfg.prompt, cfg.gen};
    p.prefill_seconds = median(prefill);
    p.decode_seconds = median(decode);
    p.prefill_tokens_per_second = batch * cfg.prompt / p.prefill_seconds;
    p.decode_tokens_per_second = batch * cfg.gen / p.decode_seconds;
    p.ms_per_decode_step = 1000.0 * p.decode_seconds / cfg.gen;
    result.points.push_back(p);
  }
  return result;
}

}  // namespace compactor
