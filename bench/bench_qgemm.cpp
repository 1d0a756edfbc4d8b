// Kernel benchmark of the fused quantized GEMV/skinny GEMM (backend/cuda/qgemv.cuh) on real
// Llama-2-7B / Llama-3-8B layer shapes: for each shape × format × M it times
//   fused     qgemv_cuda on the repacked weight (what CudaBackend::matmul runs for M <= kQgemvAutoMaxRows)
//   tc        int4, int8, NF4: the tensor-core variant (QgemvKernel::kTensorCores, its own tile layout);
//             with --quant-gemm fused, int4 above 32 rows: the wgmma GEMM (qgemm_wgmma.cu)
//   dequant   dequantize_cuda + cuBLAS (the path above that, and the previous quantized path)
//   cublas    cuBLAS GEMM with a dense weight in the activation dtype (allow_gemv off)
//   dense     our dense decode path (matmul_cuda: the GEMV kernel for M <= 4, else cuBLAS)
// with CUDA events after warm-up (median of batches of launches), rotating over enough weight
// copies that L2 (50 MB) cannot hold them. Reports µs, GB/s of the fused kernel (repacked codes +
// scales/zeros + x + out), % of 3000 GB/s, TFLOP/s and speedups; a table on stdout, JSON with --json.
// Last, per model (Llama-2-7B, Llama-3-8B), format and M: the summed time of all linears of one
// decode step, quantized layers (best of fused, tc and dequant) + dense lm_head vs all dense.
// Weights are random bit patterns filled on the device (every bit pattern is a valid code).
// --formats nf4 benchmarks NF4 (formats/nf4.h, block 64): "fused" is the CUDA-core kernel, "tc" the
// tensor-core one (level pairs from a shared-memory table), dequant is its NF4 dequantize.
// Run (GPU machine): build-*/bench/bench_qgemm [--json out.json] [--act bf16|f16] [--m 1,2,4]
//                    [--formats w4g128,w8,w3g128,w2g64] [--shapes "llama2 q/k/v/o,..."] [--quick]
//                    [--pdl on|off] [--stream-weights on|off] [--quant-gemm fused|dequant] [--gemm-plan auto|256x2]
//                    (gemm-plan: the wgmma GEMM's tokens per block x split K, default its own choice; pdl on: programmatic dependent launches, as the backend decodes:
//                    each timed launch may start while the previous one drains)
#include <cuda_runtime_api.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>
#include <vector>

#include "backend/cuda/common.cuh"
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/dequant.cuh"
#include "backend/cuda/matmul.cuh"
#include "backend/cuda/qgemv.cuh"
#include "formats/format.h"
#include "formats/nf4.h"

namespace compactor {
namespace {

constexpr double kPeakGBs = 3000.0;          // H100 SXM HBM3, the target's reference
constexpr int64_t kRotateBytes = 160 << 20;  // weight copies cover > 3x L2

struct LayerShape {
  std::string name;
  int64_t n, k;
};

const LayerShape kShapes[] = {
    {"llama2 q/k/v/o", 4096, 4096},   {"llama2 gate/up", 11008, 4096}, {"llama2 down", 4096, 11008},
    {"llama2 lm_head", 32000, 4096},  {"llama3 gate/up", 14336, 4096}, {"llama3 down", 4096, 14336},
    {"llama3 k/v", 1024, 4096},       {"llama3 lm_head", 128256, 4096},
};

struct Options {
  std::string json_path, act = "bf16", formats = "w4g128,w8,w3g128,w2g64", shapes, m_list = "1,2,4,8,16,32,64,128",
              pdl = "on", stream_weights = "on", quant_gemm = "fused";
  std::string gemm_plan = "auto";
  bool quick = false;
};

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    const size_t end = s.find(',', start);
    const std::string item = s.substr(start, end == std::string::npos ? std::string::npos : end - start);
    if (!item.empty()) out.push_back(item);
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return out;
}

void die_if(const Status& st, const std::string& what) {
  if (st.is_ok()) return;
  std::fprintf(stderr, "bench_qgemm: %s: %s\n", what.c_str(), st.message().c_str());
  std::exit(1);
}

// Median over batches of the per-launch time of `launch(i)` (i = launch counter, for rotation), µs.
double time_us(CudaBackend& be, const std::function<Status(int)>& launch, bool quick) {
  int counter = 0;
  for (int i = 0; i < 3; ++i) die_if(launch(counter++), "warm-up");
  auto one = be.time_ms([&] { return launch(counter++); });
  die_if(one.status(), "timing");
  const double single_ms = std::max(1e-3, static_cast<double>(*one));
  const int per_batch = std::clamp(static_cast<int>((quick ? 0.5 : 2.0) / single_ms), 1, 50);
  std::vector<double> us;
  for (int b = 0; b < (quick ? 3 : 7); ++b) {
    auto ms = be.time_ms([&]() -> Status {
      for (int i = 0; i < per_batch; ++i) RETURN_IF_ERROR(launch(counter++));
      return Status::ok();
    });
    die_if(ms.status(), "timing");
    us.push_back(1000.0 * *ms / per_batch);
  }
  std::sort(us.begin(), us.end());
  return us[us.size() / 2];
}

Tensor filled(CudaBackend& be, Shape shape, DType dtype, uint64_t stream_id, float mean, float stddev) {
  Tensor t = be.alloc(shape, dtype);
  // Integer tensors are filled through an f32 view of the same bytes: random bit patterns.
  View v = t.view();
  if (dtype == DType::kI32) v = View{t.data(), Shape{t.numel()}, DType::kF32, Device::kCuda};
  die_if(be.fill_normal(v, stream_id, mean, stddev), "fill");
  return t;
}

// --formats nf4 (not an intN preset): NF4 at block 64.
constexpr QuantPreset kNF4Bench{"nf4", 4, kNF4DefaultBlock};

// A random packed quantized weight on the device (quant_pack.h layout, or nf4.h's).
struct PackedCopy {
  Tensor qweight, scales, qzeros, nested_scales, nested_offset;
  LinearWeight w;
};

// NF4: random codes; E4M3 scale codes from the bytes of N(0.5, 0.1²) floats (finite, mostly
// positive), so the decoded absmax values are ordinary numbers.
PackedCopy random_nf4(CudaBackend& be, int64_t n, int64_t k, uint64_t seed) {
  PackedCopy c;
  const int64_t g = quant_groups(kNF4DefaultBlock, k), nested = ceil_div(g * n, kNF4NestedBlock);
  c.qweight = filled(be, Shape{packed_words(4, k), n}, DType::kI32, seed * 8 + 1, 0.f, 1e6f);
  c.scales = be.alloc(Shape{g, n}, DType::kU8);
  std::vector<uint8_t> codes(g * n);
  for (int64_t i = 0; i < g * n; ++i) codes[i] = float_to_e4m3(0.5f + 0.1f * static_cast<float>((i * 2654435761u) % 97) / 97.f);
  be.copy_from_host(codes.data(), c.scales);
  c.nested_scales = filled(be, Shape{nested}, DType::kF32, seed * 8 + 2, 0.01f, 0.001f);
  c.nested_offset = filled(be, Shape{1}, DType::kF32, seed * 8 + 3, 0.02f, 0.f);
  c.w.format = Format::kNF4;
  c.w.out_features = n;
  c.w.in_features = k;
  c.w.group_size = kNF4DefaultBlock;
  c.w.qweight = c.qweight;
  c.w.scales = c.scales;
  c.w.nested_scales = c.nested_scales;
  c.w.nested_offset = c.nested_offset;
  return c;
}

PackedCopy random_packed(CudaBackend& be, const QuantPreset& p, int64_t n, int64_t k, uint64_t seed) {
  if (&p == &kNF4Bench) return random_nf4(be, n, k, seed);
  PackedCopy c;
  const int64_t g = quant_groups(p.group_size, k);
  c.qweight = filled(be, Shape{packed_words(p.bits, k), n}, DType::kI32, seed * 8 + 1, 0.f, 1e6f);
  c.scales = filled(be, Shape{g, n}, DType::kF16, seed * 8 + 2, 0.01f, 0.002f);
  c.qzeros = filled(be, Shape{g, packed_words(p.bits, n)}, DType::kI32, seed * 8 + 3, 0.f, 1e6f);
  format_from_bits(p.bits, &c.w.format);
  c.w.out_features = n;
  c.w.in_features = k;
  c.w.group_size = p.group_size;
  c.w.qweight = c.qweight;
  c.w.scales = c.scales;
  c.w.qzeros = c.qzeros;
  return c;
}

int copies_for(int64_t bytes) { return static_cast<int>(std::clamp<int64_t>(kRotateBytes / std::max<int64_t>(bytes, 1) + 1, 1, 16)); }

struct Row {
  std::string shape, format;
  int64_t n, k, m;
  double fused_us, dequant_us, cublas_us, dense_us, fused_gbs, fused_tflops;
  double tc_us = 0, tc_gbs = 0;  // int4 only (0 otherwise)
  std::string gemm_plan = "-";   // where tc is the wgmma GEMM: tokens per block x blocks per tile
  double best_fused_us() const { return tc_us > 0 ? std::min(fused_us, tc_us) : fused_us; }
};

void print_row(const Row& r) {
  std::printf("%-16s %6ld %6ld %-7s %4ld | %9.2f %7.0f %5.1f%% %6.2f | %9.2f %7.0f %5.1f%% | %9.2f %9.2f %9.2f | "
              "%5.2fx %5.2fx %5.2fx %s\n",
              r.shape.c_str(), r.n, r.k, r.format.c_str(), r.m, r.fused_us, r.fused_gbs, 100.0 * r.fused_gbs / kPeakGBs,
              r.fused_tflops, r.tc_us, r.tc_gbs, 100.0 * r.tc_gbs / kPeakGBs, r.dequant_us, r.cublas_us, r.dense_us,
              r.cublas_us / r.best_fused_us(), r.dense_us / r.best_fused_us(), r.dequant_us / r.best_fused_us(),
              r.gemm_plan.c_str());
}

nlohmann::json to_json(const Row& r) {
  return {{"shape", r.shape},       {"n", r.n},           {"k", r.k},
          {"format", r.format},     {"m", r.m},           {"fused_us", r.fused_us},
          {"fused_gbs", r.fused_gbs}, {"fused_pct_of_3000gbs", 100.0 * r.fused_gbs / kPeakGBs},
          {"fused_tflops", r.fused_tflops}, {"dequant_cublas_us", r.dequant_us}, {"cublas_us", r.cublas_us},
          {"dense_us", r.dense_us}, {"tc_us", r.tc_us}, {"tc_gbs", r.tc_gbs}, {"gemm_plan", r.gemm_plan},
          {"speedup_vs_cublas", r.cublas_us / r.best_fused_us()}, {"speedup_vs_dense", r.dense_us / r.best_fused_us()},
          {"speedup_vs_dequant", r.dequant_us / r.best_fused_us()}};
}

// Dense baselines of one shape at every M: cuBLAS and our dense decode path, rotating copies.
std::vector<std::pair<double, double>> dense_baselines(CudaBackend& be, cublasHandle_t handle, const LayerShape& s,
                                                       const std::vector<int64_t>& ms, DType act, bool quick) {
  const int copies = copies_for(s.n * s.k * 2);
  std::vector<Tensor> weights;
  std::vector<LinearWeight> ws(copies);
  for (int c = 0; c < copies; ++c) {
    weights.push_back(filled(be, Shape{s.n, s.k}, act, 1000 + c, 0.f, 0.02f));
    format_from_dtype(act, &ws[c].format);
    ws[c].out_features = s.n;
    ws[c].in_features = s.k;
    ws[c].weight = weights.back();
  }
  std::vector<std::pair<double, double>> out;
  for (int64_t m : ms) {
    Tensor x = filled(be, Shape{m, s.k}, act, 7, 0.f, 1.f);
    Tensor y = be.alloc(Shape{m, s.n}, act);
    const double cublas = time_us(be, [&](int i) { return matmul_cuda(y, x, ws[i % copies], handle, be.stream(), false); }, quick);
    const double dense = time_us(be, [&](int i) { return matmul_cuda(y, x, ws[i % copies], handle, be.stream(), true); }, quick);
    out.emplace_back(cublas, dense);
  }
  return out;
}

std::vector<Row> bench_shape(CudaBackend& be, cublasHandle_t handle, const LayerShape& s, const QuantPreset& p,
                             const std::vector<int64_t>& ms, const std::vector<std::pair<double, double>>& dense,
                             DType act, bool quick) {
  const bool nf4 = &p == &kNF4Bench;
  const int64_t probe_bytes = nf4 ? nf4_packed_bytes(s.n, s.k) : quant_packed_bytes(QuantSpec{p.bits, p.group_size, false}, s.n, s.k, false);
  const int copies = copies_for(probe_bytes);
  std::vector<QgemvRepacked> repacked, repacked_tc;
  std::vector<PackedCopy> packed;
  for (int c = 0; c < copies; ++c) {
    packed.push_back(random_packed(be, p, s.n, s.k, 10 + c));
    auto r = qgemv_repack_cuda(packed.back().w, be.stream());
    die_if(r.status(), "repack " + s.name);
    repacked.push_back(std::move(r).value());
    if (p.bits != 4 && p.bits != 8) continue;  // tensor-core layouts: int4 (NF4), int8
    auto tc = qgemv_repack_cuda(packed.back().w, be.stream(), QgemvKernel::kTensorCores);
    die_if(tc.status(), "tc repack " + s.name);
    repacked_tc.push_back(std::move(tc).value());
  }
  Tensor dequant_buf = be.alloc(Shape{s.n, s.k}, act);
  std::vector<Row> rows;
  for (size_t mi = 0; mi < ms.size(); ++mi) {
    const int64_t m = ms[mi];
    Tensor x = filled(be, Shape{m, s.k}, act, 7, 0.f, 1.f);
    Tensor y = be.alloc(Shape{m, s.n}, act);
    size_t scratch_bytes = qgemv_scratch_bytes(repacked[0].view(), m, act, x.data());
    if (!repacked_tc.empty())
      scratch_bytes = std::max(scratch_bytes, qgemv_scratch_bytes(repacked_tc[0].view(), m, act, x.data()));
    Tensor scratch = be.alloc(Shape{static_cast<int64_t>(std::max<size_t>(scratch_bytes, 16))}, DType::kU8);
    Row r{s.name, std::string(p.name), s.n, s.k, m, 0, 0, dense[mi].first, dense[mi].second, 0, 0};
    r.fused_us = time_us(be, [&](int i) {
      return qgemv_cuda(y, x, repacked[i % copies].view(), View{}, false, scratch.data(), be.stream());
    }, quick);
    if (!repacked_tc.empty()) {
      r.tc_us = time_us(be, [&](int i) {
        return qgemv_cuda(y, x, repacked_tc[i % copies].view(), View{}, false, scratch.data(), be.stream());
      }, quick);
      r.tc_gbs = (static_cast<double>(repacked_tc[0].bytes()) + static_cast<double>((m * s.k + m * s.n) * 2)) /
                 (r.tc_us * 1e3);
      if (qgemm_wgmma_takes(p.bits, nf4) && m >= kQgemmWgmmaMinRows) {
        auto plan = qgemm_wgmma_plan(m, s.n, s.k);
        die_if(plan.status(), "GEMM plan " + s.name);
        r.gemm_plan = std::to_string(plan->tokens) + "x" + std::to_string(plan->splits);
      }
    }
    r.dequant_us = time_us(be, [&](int i) -> Status {
      const LinearWeight& q = packed[i % copies].w;
      RETURN_IF_ERROR(dequantize_cuda(dequant_buf, q, be.stream()));
      LinearWeight d;
      format_from_dtype(act, &d.format);
      d.out_features = s.n;
      d.in_features = s.k;
      d.weight = dequant_buf;
      return matmul_cuda(y, x, d, handle, be.stream(), true);
    }, quick);
    const double bytes = static_cast<double>(repacked[0].bytes()) + static_cast<double>((m * s.k + m * s.n) * 2);
    r.fused_gbs = bytes / (r.fused_us * 1e3);
    r.fused_tflops = 2.0 * m * s.n * s.k / (r.fused_us * 1e6);
    print_row(r);
    rows.push_back(r);
  }
  return rows;
}

// Linears of one decoder layer (shape name, count) and the lm_head, for a per-token estimate.
struct ModelLinears {
  std::string model;
  std::vector<std::pair<std::string, int>> layer;
  int layers;
  std::string lm_head;
};

const ModelLinears kModels[] = {
    {"llama2-7b", {{"llama2 q/k/v/o", 4}, {"llama2 gate/up", 2}, {"llama2 down", 1}}, 32, "llama2 lm_head"},
    {"llama3-8b", {{"llama2 q/k/v/o", 2}, {"llama3 k/v", 2}, {"llama3 gate/up", 2}, {"llama3 down", 1}}, 32,
     "llama3 lm_head"},
};

// Σ over a model's linears of the fused time (layers quantized, lm_head dense as GPTQ checkpoints
// keep it) against the dense time, per M: a kernel-level proxy of the decode speedup.
nlohmann::json model_estimates(const std::vector<Row>& rows) {
  nlohmann::json out = nlohmann::json::array();
  auto find = [&](const std::string& shape, const std::string& format, int64_t m) -> const Row* {
    for (const Row& r : rows)
      if (r.shape == shape && r.format == format && r.m == m) return &r;
    return nullptr;
  };
  for (const ModelLinears& ml : kModels)
    for (const Row& probe : rows) {
      if (probe.shape != ml.lm_head) continue;  // one estimate per (format, M) with the lm_head measured
      double fused = probe.dense_us, dense = probe.dense_us;
      bool complete = true;
      for (const auto& [shape, count] : ml.layer) {
        const Row* r = find(shape, probe.format, probe.m);
        if (r == nullptr) { complete = false; break; }
        fused += ml.layers * count * std::min(r->best_fused_us(), r->dequant_us);
        dense += ml.layers * count * r->dense_us;
      }
      if (!complete) continue;
      std::printf("%-10s %-7s M %4ld: linears per token %9.1f us quantized (best of fused, tc, dequant) vs %9.1f us "
                  "dense: %.2fx\n", ml.model.c_str(), probe.format.c_str(), probe.m, fused, dense, dense / fused);
      out.push_back({{"model", ml.model}, {"format", probe.format}, {"m", probe.m}, {"quantized_linears_us", fused},
                     {"dense_linears_us", dense}, {"speedup", dense / fused}});
    }
  return out;
}

int run(const Options& o) {
  DType act = DType::kBF16;
  if (o.act == "f16") act = DType::kF16;
  CudaBackendOptions be_opts{act};
  be_opts.dependent_launch = o.pdl == "off" ? DependentLaunch::kOff : DependentLaunch::kOn;
  be_opts.weight_streaming = o.stream_weights == "off" ? WeightStreaming::kOff : WeightStreaming::kOn;
  be_opts.quant_gemm = o.quant_gemm == "dequant" ? QuantGemm::kDequantize : QuantGemm::kFused;
  auto be_or = CudaBackend::create(be_opts);
  die_if(be_or.status(), "CUDA backend");
  CudaBackend& be = **be_or;
  if (o.gemm_plan != "auto") {
    const size_t x = o.gemm_plan.find('x');
    const int tokens = std::stoi(o.gemm_plan.substr(0, x)), splits = std::stoi(o.gemm_plan.substr(x + 1));
    set_qgemm_wgmma_plan(tokens, splits);
  }
  cublasHandle_t handle = nullptr;
  if (cublasCreate(&handle) != CUBLAS_STATUS_SUCCESS || cublasSetStream(handle, be.stream()) != CUBLAS_STATUS_SUCCESS) {
    std::fprintf(stderr, "bench_qgemm: cuBLAS initialisation failed\n");
    return 1;
  }
  std::vector<int64_t> ms;
  for (const std::string& m : split(o.m_list)) ms.push_back(std::stoll(m));
  std::vector<const QuantPreset*> presets;
  for (const std::string& f : split(o.formats)) {
    const QuantPreset* p = f == "nf4" ? &kNF4Bench : find_quant_preset(f);
    if (p == nullptr) {
      std::fprintf(stderr, "bench_qgemm: --formats: unknown preset '%s'\n", f.c_str());
      return 1;
    }
    presets.push_back(p);
  }
  const std::vector<std::string> only = split(o.shapes);
  std::printf("%s, %s activations; fused = qgemv (CudaBackend::matmul uses it for M <= %ld)\n", be.name().c_str(),
              o.act.c_str(), kQgemvAutoMaxRows);
  std::printf("%-16s %6s %6s %-7s %4s | %9s %7s %6s %6s | %9s %7s %6s | %9s %9s %9s | %6s %6s %6s %s\n", "shape", "N", "K",
              "format", "M", "fused us", "GB/s", "%peak", "TFLOPs", "tc us", "GB/s", "%peak", "deq+cuBLAS", "cuBLAS us",
              "dense us", "xcuBL", "xdense", "xdeq", "plan");
  std::printf("(speedups x.. use the faster of fused and tc; plan: where tc is the wgmma GEMM, tokens per block x "
              "blocks per tile)\n");
  if (qgemm_wgmma_enabled()) {
    std::printf("wgmma GEMM blocks at once (256 tokens / 128 tokens) by blocks per tile:");
    for (int s = 1; s <= kGemmMaxSplits; ++s) {
      auto wide = qgemm_wgmma_blocks_at_once(256, s), narrow = qgemm_wgmma_blocks_at_once(128, s);
      die_if(wide.is_ok() ? narrow.status() : wide.status(), "GEMM clusters");
      std::printf(" %d: %d / %d", s, *wide, *narrow);
    }
    std::printf("\n");
  }
  nlohmann::json records = nlohmann::json::array();
  std::vector<Row> all;
  for (const LayerShape& s : kShapes) {
    if (!only.empty() && std::find(only.begin(), only.end(), s.name) == only.end()) continue;
    const auto dense = dense_baselines(be, handle, s, ms, act, o.quick);
    for (const QuantPreset* p : presets)
      for (const Row& r : bench_shape(be, handle, s, *p, ms, dense, act, o.quick)) {
        records.push_back(to_json(r));
        all.push_back(r);
      }
  }
  cublasDestroy(handle);
  const nlohmann::json estimates = model_estimates(all);
  if (!o.json_path.empty()) {
    nlohmann::json doc = {{"device", be.name()}, {"activation", o.act}, {"peak_gbs", kPeakGBs}, {"pdl", o.pdl}, {"stream_weights", o.stream_weights}, {"quant_gemm", o.quant_gemm}, {"gemm_plan", o.gemm_plan},
                          {"auto_max_rows", kQgemvAutoMaxRows}, {"results", records},
                          {"model_linear_estimates", estimates}};
    std::ofstream(o.json_path) << doc.dump(2) << "\n";
    std::printf("wrote %s\n", o.json_path.c_str());
  }
  return 0;
}

}  // namespace
}  // namespace compactor

int main(int argc, char** argv) {
  compactor::Options o;
  CLI::App app{"Fused quantized GEMV/GEMM kernel benchmark (CUDA)"};
  app.add_option("--json", o.json_path, "write the results as JSON here");
  app.add_option("--act", o.act, "activation dtype: bf16 or f16")->check(CLI::IsMember({"bf16", "f16"}));
  app.add_option("--formats", o.formats, "comma-separated presets (format.h) or nf4, e.g. w4g128,w8,w3g128,w2g64,nf4");
  app.add_option("--shapes", o.shapes, "comma-separated shape names (default: all)");
  app.add_option("--m", o.m_list, "comma-separated input row counts");
  app.add_flag("--quick", o.quick, "fewer repetitions");
  app.add_option("--pdl", o.pdl,
                 "programmatic dependent launches (each launch starts while the previous drains, as in a decode "
                 "step): on or off")
      ->check(CLI::IsMember({"on", "off"}));
  app.add_option("--stream-weights", o.stream_weights,
                 "GEMVs of up to 16 rows on tensor cores: weights streamed by TMA bulk copies (on) or the per-lane "
                 "kernel (off)")
      ->check(CLI::IsMember({"on", "off"}));
  app.add_option("--quant-gemm", o.quant_gemm,
                 "int4 on tensor cores above 32 rows: the wgmma GEMM (fused) or the per-lane kernel (dequant: what "
                 "the backend then replaces by dequantize + cuBLAS)")
      ->check(CLI::IsMember({"fused", "dequant"}));
  app.add_option("--gemm-plan", o.gemm_plan,
                 "the wgmma GEMM's tokens per block x blocks per output tile (split K over a cluster): auto (chosen "
                 "per launch), or e.g. 256x1, 128x2; 0 in either place leaves that part to the GEMM")
      ->check([](const std::string& v) -> std::string {
        static const std::regex form("auto|(0|128|256)x[0-4]");
        return std::regex_match(v, form) ? "" : "expected auto or TOKENSxSPLITS (TOKENS 0, 128 or 256; SPLITS 0-4)";
      });
  CLI11_PARSE(app, argc, argv);
  return compactor::run(o);
}
