// The CUDA path of run_bench (bench.h): CUDA-event timing, memory estimates before each point,
// TTFT points and graph-replayed decode. Without CUDA it returns an error.
// Test: bench/run_device_bench.sh (device); build-*/tests/test_bench (CPU, the no-CUDA error).
#pragma once

#include "bench/bench.h"

namespace compactor {

Result<BenchResult> run_bench_cuda(Model& model, const BenchConfig& cfg);

}  // namespace compactor
