// End-to-end speed of a model on its backend, on random token ids (speed does not depend on the
// text): time to first token for batch-1 prompts, and per batch size a prefill followed by
// decode steps, with peak memory and the fraction of the physical limit reached:
//   decode:  (weight bytes + KV bytes read per step) / step time / HBM bandwidth
//            (quantized: the packed bytes, qweight + scales + qzeros, not a dense equivalent)
//   prefill: (2 · linear params · T + attention FLOPs) / time / dense bf16 tensor-core peak
// CUDA: CUDA events around the work after a warm-up, median of repeats, decode steps replayed
// from a CUDA graph with ids and sampling on the GPU (bench/cuda_decode.h). CPU: host clock.
// Test: build-*/tests/test_bench (CPU); the device run is bench/run_device_bench.sh.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/model.h"

namespace compactor {

struct BenchConfig {
  std::vector<int> batches{1};
  int prompt = 128;   // prompt tokens per sequence of the decode points
  int gen = 32;       // decoded tokens per sequence
  int repeats = 3;    // the median of repeats is reported
  uint64_t seed = 0;
  std::vector<int> ttft_prompts;         // batch-1 time-to-first-token points (prefill + first sample)
  double hbm_bytes_per_second = 3.0e12;  // decode bound (H100 SXM HBM3 copy rate)
  double peak_flops = 989e12;            // prefill bound (H100 SXM dense bf16 tensor cores)
  bool cuda_graphs = true;               // CUDA: replay a captured decode step
};

struct TtftPoint {
  int prompt = 0;
  double ms = 0;        // median: prefill forward + first token sampled
  double flops = 0;     // 2 · linear params · T + attention
  double fraction = 0;  // flops / time / peak
};

struct BenchPoint {
  int batch = 1, prompt = 0, gen = 0;
  double prefill_seconds = 0;      // median, whole batch
  double prefill_tokens_per_second = 0;
  double prefill_fraction = 0;     // of peak_flops
  double decode_seconds = 0;       // median, all gen steps
  double decode_tokens_per_second = 0;  // batch * gen / decode_seconds
  double ms_per_decode_step = 0;
  double bytes_per_decode_step = 0;     // weights + mean KV bytes read per step
  double decode_fraction = 0;           // of hbm_bytes_per_second
  bool cuda_graph = false;              // decode steps replayed from a CUDA graph
  std::string graph_error;              // why capture failed, when it did
  double decode_seconds_min = 0, decode_seconds_max = 0;  // spread of the repeats
};

struct BenchResult {
  std::vector<TtftPoint> ttft;
  std::vector<BenchPoint> points;
  int64_t weight_bytes = 0;            // model_weight_bytes: dense tensors + packed (qweight+scales+qzeros+g_idx)
  int64_t quantized_weight_bytes = 0;  // the packed part of weight_bytes (0 for a dense model)
  int64_t runtime_weight_bytes = 0;    // CUDA: repacked copies + dequantize scratch of packed linears (estimate)
  std::string weight_format;           // weight_format_label(model)
  int64_t peak_kv_bytes = 0;
  int64_t peak_device_bytes = 0;   // CUDA: high-water of the backend's allocations
  int64_t device_total_bytes = 0;  // CUDA: the GPU's memory
  std::string timing;              // "cuda events" | "host clock"
  std::vector<std::string> notes;  // sanity checks and fallbacks
};

Result<BenchResult> run_bench(Model& model, const BenchConfig& cfg);

// "dense bf16", or e.g. "int4 g128 asym: 224 of 225 linears packed (embeddings, lm_head dense bf16)".
std::string weight_format_label(const Model& model);

// FLOPs of one prefill of `tokens` tokens per sequence: 2 · (linear params of the blocks) · B·T,
// the LM head for the B last rows, and causal attention (QKᵀ and PV over past + t + 1 keys).
double prefill_flops(const ModelConfig& c, int batch, int tokens, int past = 0);
// Bytes a decode step reads: every weight except the embedding table (B rows of it), plus the
// KV cache of `keys` positions per sequence.
double decode_step_bytes(const ModelConfig& c, int64_t weight_bytes, int act_bytes, int batch, double keys);

}  // namespace compactor
