// End-to-end speed of a model on its backend: prefill (time to first token) and decode throughput
// at several batch sizes, on random token ids (speed does not depend on the text), plus memory.
// Timings are wall-clock around synchronised backend work, after a warm-up pass.
#pragma once

#include <cstdint>
#include <vector>

#include "model/model.h"

namespace compactor {

struct BenchConfig {
  std::vector<int> batches{1};
  int prompt = 128;   // prompt tokens per sequence
  int gen = 32;       // decoded tokens per sequence
  int repeats = 3;    // the median of repeats is reported
  uint64_t seed = 0;
};

struct BenchPoint {
  int batch = 1, prompt = 0, gen = 0;
  double prefill_seconds = 0;      // median, whole batch
  double prefill_tokens_per_second = 0;
  double decode_seconds = 0;       // median, all gen steps
  double decode_tokens_per_second = 0;  // batch * gen / decode_seconds
  double ms_per_decode_step = 0;
};

struct BenchResult {
  std::vector<BenchPoint> points;
  int64_t weight_bytes = 0;
  int64_t peak_kv_bytes = 0;
};

Result<BenchResult> run_bench(Model& model, const BenchConfig& cfg);

}  // namespace compactor
