// run_bench_cuda: per point, the memory it needs is estimated and checked against free device
// memory first; every timed region is bracketed by CUDA events after a warm-up, and the median
// of the repeats is reported. Decode: prefill B random prompts, sample the first tokens on the
// GPU, then `gen` steps replayed from one captured CUDA graph (CudaDecodeLoop); repeats rewind
// the lengths and decode the same positions again.
// Test: bench/run_device_bench.sh (device).
#include "bench/cuda_bench.h"

#ifdef COMPACTOR_HAS_CUDA

#include <algorithm>
#include <new>
#include <random>

#include "backend/cuda/cuda_backend.h"
#include "bench/cuda_decode.h"
#include "bench/memory_plan.h"
#include "model/synthetic.h"

namespace compactor {

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

std::vector<int32_t> random_ids(std::mt19937& rng, int64_t n, int64_t vocab) {
  std::uniform_int_distribution<int32_t> token(0, static_cast<int32_t>(vocab - 1));
  std::vector<int32_t> ids(n);
  for (auto& id : ids) id = token(rng);
  return ids;
}

class CudaBench {
 public:
  CudaBench(Model& model, CudaBackend& be, const BenchConfig& cfg)
      : model_(model), be_(be), cfg_(cfg), rng_(static_cast<uint32_t>(cfg.seed)) {}

  Result<BenchResult> run();

 private:
  Status check_fits(int batch, int prompt, int context) const;
  Result<TtftPoint> ttft(int prompt);
  Result<BenchPoint> decode(int batch);
  // Prefill of B×T random ids + first-token sampling into ids_dev [B]; returns device ms.
  Result<float> prefill(KvCache& cache, int batch, int tokens, Tensor& ids_dev);

  Model& model_;
  CudaBackend& be_;
  const BenchConfig& cfg_;
  std::mt19937 rng_;
  BenchResult result_;
};

// Quantized models: the backend's repacked copies and dequantize scratch count as weights; they
// exist once the first decode point ran (the repack happens lazily at the first GEMV).
Status CudaBench::check_fits(int batch, int prompt, int context) const {
  const CudaMemoryInfo mem = be_.memory_info();
  const int64_t resident = result_.weight_bytes + result_.runtime_weight_bytes;
  const int64_t placed = result_.weight_bytes + (result_.points.empty() ? 0 : result_.runtime_weight_bytes);
  const MemoryEstimate e = estimate_memory(model_.config(), resident, dtype_size(be_.activation_dtype()), batch,
                                           prompt, context);
  // Our other live buffers (the previous point's scratch) are replaced by this point's.
  const int64_t reusable = std::max<int64_t>(0, mem.allocated_bytes - placed);
  return check_memory_fits(e, placed, mem.free_bytes + reusable,
                           fmt::format("batch {}, prompt {}, context {}", batch, prompt, context));
}

Result<float> CudaBench::prefill(KvCache& cache, int batch, int tokens, Tensor& ids_dev) {
  const std::vector<int32_t> ids = random_ids(rng_, static_cast<int64_t>(batch) * tokens, model_.config().vocab_size);
  cache.reset();
  return be_.time_ms([&]() -> Status {
    ASSIGN_OR_RETURN(View logits, model_.forward({ids.data(), BatchLayout{batch, tokens}, LogitsMode::kLast}, cache));
    return be_.sample(ids_dev.as<int32_t>(), logits, SampleParams{});
  });
}

Result<TtftPoint> CudaBench::ttft(int prompt) {
  RETURN_IF_ERROR(check_fits(1, prompt, prompt));
  KvCache cache = model_.make_kv_cache(1, prompt);
  result_.peak_kv_bytes = std::max(result_.peak_kv_bytes, cache.bytes());
  Tensor ids_dev = be_.alloc(Shape{1}, DType::kI32);
  RETURN_IF_ERROR(prefill(cache, 1, prompt, ids_dev).status());  // warm-up
  std::vector<double> ms;
  for (int r = 0; r < cfg_.repeats; ++r) {
    ASSIGN_OR_RETURN(float t, prefill(cache, 1, prompt, ids_dev));
    ms.push_back(t);
  }
  TtftPoint p;
  p.prompt = prompt;
  p.ms = median(ms);
  p.flops = prefill_flops(model_.config(), 1, prompt);
  p.fraction = p.flops / (p.ms * 1e-3) / cfg_.peak_flops;
  return p;
}

Result<BenchPoint> CudaBench::decode(int batch) {
  const int context = cfg_.prompt + cfg_.gen + 1;  // + the warm-up step
  RETURN_IF_ERROR(check_fits(batch, cfg_.prompt, context));
  KvCache cache = model_.make_kv_cache(batch, context);
  result_.peak_kv_bytes = std::max(result_.peak_kv_bytes, cache.bytes());
  Tensor first_ids = be_.alloc(Shape{batch}, DType::kI32);
  BenchPoint p;
  p.batch = batch;
  p.prompt = cfg_.prompt;
  p.gen = cfg_.gen;
  RETURN_IF_ERROR(prefill(cache, batch, cfg_.prompt, first_ids).status());  // warm-up
  std::vector<double> prefill_ms;
  for (int r = 0; r < cfg_.repeats; ++r) {
    ASSIGN_OR_RETURN(float t, prefill(cache, batch, cfg_.prompt, first_ids));
    prefill_ms.push_back(t);
  }
  // One more (untimed) prefill whose logits the decode loop samples its first tokens from.
  const std::vector<int32_t> ids = random_ids(rng_, static_cast<int64_t>(batch) * cfg_.prompt, model_.config().vocab_size);
  cache.reset();
  ASSIGN_OR_RETURN(View logits, model_.forward({ids.data(), BatchLayout{batch, cfg_.prompt}, LogitsMode::kLast}, cache));
  const GraphMode mode = cfg_.cuda_graphs ? GraphMode::kOn : GraphMode::kOff;
  ASSIGN_OR_RETURN(auto loop, CudaDecodeLoop::create(model_, be_, cache, SampleParams{}, cfg_.gen + 1, mode));
  RETURN_IF_ERROR(loop->start(logits));
  std::vector<double> decode_s;
  for (int r = 0; r < cfg_.repeats; ++r) {
    RETURN_IF_ERROR(loop->rewind());
    ASSIGN_OR_RETURN(float t, be_.time_ms([&]() -> Status {
      for (int g = 0; g < cfg_.gen; ++g) RETURN_IF_ERROR(loop->step());
      return Status::ok();
    }));
    decode_s.push_back(t * 1e-3);
  }
  ASSIGN_OR_RETURN(auto tokens, loop->tokens());
  for (const auto& row : tokens)
    for (int32_t id : row)
      if (id < 0 || id >= model_.config().vocab_size)
        return Status(StatusCode::kInternal, fmt::format("bench: decode sampled id {} outside the vocabulary", id));
  p.cuda_graph = loop->uses_graph();
  p.graph_error = loop->graph_error();
  loop.reset();
  p.prefill_seconds = median(prefill_ms) * 1e-3;
  p.prefill_tokens_per_second = batch * cfg_.prompt / p.prefill_seconds;
  p.prefill_fraction = prefill_flops(model_.config(), batch, cfg_.prompt) / p.prefill_seconds / cfg_.peak_flops;
  p.decode_seconds = median(decode_s);
  p.decode_seconds_min = *std::min_element(decode_s.begin(), decode_s.end());
  p.decode_seconds_max = *std::max_element(decode_s.begin(), decode_s.end());
  p.decode_tokens_per_second = batch * cfg_.gen / p.decode_seconds;
  p.ms_per_decode_step = 1000.0 * p.decode_seconds / cfg_.gen;
  // Timed steps read keys at positions prompt+1 .. prompt+gen: prompt + 1 + (gen + 1)/2 on average.
  p.bytes_per_decode_step = decode_step_bytes(model_.config(), result_.weight_bytes, dtype_size(be_.activation_dtype()),
                                              batch, cfg_.prompt + 1 + (cfg_.gen + 1) / 2.0);
  p.decode_fraction = p.bytes_per_decode_step / (p.ms_per_decode_step * 1e-3) / cfg_.hbm_bytes_per_second;
  return p;
}

Result<BenchResult> CudaBench::run() {
  result_.timing = "cuda events";
  result_.weight_bytes = model_weight_bytes(model_);
  result_.quantized_weight_bytes = model_quantized_bytes(model_);
  result_.runtime_weight_bytes = quantized_runtime_bytes(model_, dtype_size(be_.activation_dtype()));
  result_.weight_format = weight_format_label(model_);
  for (int prompt : cfg_.ttft_prompts) {
    ASSIGN_OR_RETURN(TtftPoint p, ttft(prompt));
    result_.ttft.push_back(p);
  }
  for (int batch : cfg_.batches) {
    ASSIGN_OR_RETURN(BenchPoint p, decode(batch));
    if (!p.cuda_graph && cfg_.cuda_graphs)
      result_.notes.push_back(fmt::format("batch {}: decode ran eagerly ({})", batch, p.graph_error));
    result_.points.push_back(p);
  }
  const CudaMemoryInfo mem = be_.memory_info();
  result_.peak_device_bytes = mem.peak_allocated_bytes;
  result_.device_total_bytes = mem.total_bytes;
  return result_;
}

}  // namespace

Result<BenchResult> run_bench_cuda(Model& model, const BenchConfig& cfg) {
  auto* be = dynamic_cast<CudaBackend*>(&model.backend());
  if (be == nullptr) return invalid_argument("bench: the model is not on a CUDA backend");
  CudaBench bench(model, *be, cfg);
  try {  // the estimate runs first; an allocation that still fails is an error, not a crash
    return bench.run();
  } catch (const std::bad_alloc&) {
    be->clear_device_args();
    return Status(StatusCode::kOutOfMemory, "bench: out of GPU memory (the estimate was too low for this point)");
  }
}

}  // namespace compactor

#else

namespace compactor {
Result<BenchResult> run_bench_cuda(Model&, const BenchConfig&) {
  return unsupported("bench: this build of compactor has no CUDA backend");
}
}  // namespace compactor

#endif  // COMPACTOR_HAS_CUDA
