// CPU kernel benchmark: matmul with bf16 weights on real model shapes (the sp fixture's 384→1024
// MLP projection and a 7B-class 4096×4096 projection), at T=1 (decode: bound by weight bytes, read
// GB/s) and T=128 (prefill: read GFLOP/s). The explicit GEMV and sgemm path benchmarks over T show
// where the switch of matmul_cpu (matmul_gemm_min_rows()) should be; on AMD Zen 4/5 compare with
// OPENBLAS_CORETYPE=SkylakeX, which gives OpenBLAS 0.3.21 its AVX-512 kernels.
// Run: build/bench/bench_cpu_ops [--benchmark_filter=...]
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/cpu_matmul.h"

namespace compactor {
namespace {

struct MatmulSetup {
  Tensor x, w, out;
  LinearWeight lw;

  MatmulSetup(int64_t rows, int64_t k, int64_t n) {
    x = Tensor::empty(Shape{rows, k}, DType::kF32);
    w = Tensor::empty(Shape{n, k}, DType::kBF16);
    out = Tensor::empty(Shape{rows, n}, DType::kF32);
    std::mt19937 rng(0);
    std::uniform_real_distribution<float> dist(-1.f, 1.f);
    for (int64_t i = 0; i < x.numel(); ++i) x.as<float>()[i] = dist(rng);
    for (int64_t i = 0; i < w.numel(); ++i) w.as<uint16_t>()[i] = f32_to_bf16(dist(rng) * 0.02f);
    lw = LinearWeight{Format::kBF16, n, k, w.view(), View{}};
  }
};

void set_counters(benchmark::State& state, int64_t rows, int64_t k, int64_t n) {
  const double weight_bytes = double(n) * k * 2;
  state.counters["GB/s"] = benchmark::Counter(weight_bytes, benchmark::Counter::kIsIterationInvariantRate,
                                              benchmark::Counter::kIs1000);
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * rows * k * n * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

// Args: T, K, N
void BM_matmul_bf16(benchmark::State& state) {
  const int64_t rows = state.range(0), k = state.range(1), n = state.range(2);
  MatmulSetup s(rows, k, n);
  CpuBackend backend;
  for (auto _ : state) {
    backend.matmul(s.out, s.x, s.lw);
    benchmark::DoNotOptimize(s.out.data());
  }
  set_counters(state, rows, k, n);
}

template <void (*Path)(View, View, const LinearWeight&)>
void BM_matmul_path_bf16(benchmark::State& state) {
  const int64_t rows = state.range(0), k = state.range(1), n = state.range(2);
  MatmulSetup s(rows, k, n);
  for (auto _ : state) {
    Path(s.out, s.x, s.lw);
    benchmark::DoNotOptimize(s.out.data());
  }
  set_counters(state, rows, k, n);
}

BENCHMARK(BM_matmul_bf16)
    ->ArgNames({"T", "K", "N"})
    ->Args({1, 384, 1024})
    ->Args({128, 384, 1024})
    ->Args({1, 4096, 4096})
    ->Args({128, 4096, 4096})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

BENCHMARK(BM_matmul_path_bf16<matmul_gemv_cpu>)
    ->Name("BM_matmul_gemv_bf16")
    ->ArgNames({"T", "K", "N"})
    ->ArgsProduct({{4, 16, 64, 128}, {4096}, {4096}})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

BENCHMARK(BM_matmul_path_bf16<matmul_gemm_cpu>)
    ->Name("BM_matmul_gemm_bf16")
    ->ArgNames({"T", "K", "N"})
    ->ArgsProduct({{4, 16, 64, 128}, {4096}, {4096}})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

}  // namespace
}  // namespace compactor

BENCHMARK_MAIN();
