// RTN and GPTQ of one linear on the GPU for the PTQ driver (ptq_internal.h, quantize_linear_cuda):
// the model's weight (activation dtype) is widened to f32 on the device, quantized there against the
// device statistics, its output error and RTN's measured with device GEMMs, and the dequantized
// weights written back into the model's own device tensor; only codes, scales and zeros come back
// to the host. Test: build-cuda/tests/test_cuda_gptq (on a GPU machine).
#include <chrono>

#include "compress/cuda_context.h"
#include "compress/gptq_cuda.h"
#include "compress/ptq_internal.h"
#include "compress/quant_grid.h"

#ifdef COMPACTOR_HAS_CUDA
#include "backend/cuda/gptq_grid.cuh"
#endif

namespace compactor::ptq_detail {

#ifdef COMPACTOR_HAS_CUDA

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// In place when the linear owns a dense device tensor (not the embedding table it may be tied to),
// else through Model::replace_linear with a host copy. w_hat: [N, K] f32 device.
Status write_back(Model& m, int layer, const std::string& name, CudaCompressContext& ctx, View w_hat) {
  const LinearWeight& lw = layer < 0 ? m.weights().lm_head : *m.mutable_weights().layers[layer].linear(name);
  const bool tied = lw.weight.data == m.weights().embed.data;
  if (lw.weight.device == Device::kCuda && format_is_dense(lw.format) && !tied)
    return cast_cuda(lw.weight, w_hat, ctx.stream());
  std::vector<float> host(w_hat.numel());
  ctx.backend().copy_to_host(w_hat, host.data());
  return replace_linear_f32(m, layer, name, host);
}

// Ŵ by the chosen method into w_hat; fills the report's solver fields.
Result<QuantizedLinear> solve(const PtqOptions& o, PtqResult& r, const QuantSpec& spec, InputStats& st,
                              CudaCompressContext& ctx, View w, View w_hat, const std::string& module,
                              LinearReport& rep) {
  if (o.method != PtqMethod::kGptq) {
    const auto t0 = std::chrono::steady_clock::now();
    ASSIGN_OR_RETURN(QuantizedLinear q, rtn_quantize_cuda(ctx, w, spec, w_hat, module));
    r.phases.sweep += seconds_since(t0);
    return q;
  }
  GptqOptions g{spec, o.percdamp, o.block_size, o.act_order, o.static_groups};
  GpuSolveTimes times;
  ASSIGN_OR_RETURN(GptqResult res, gptq_quantize_cuda(ctx, w, st.device_gram(), st.tokens(), g, w_hat, module, &times));
  r.phases.factor += times.factor_seconds;
  r.phases.sweep += times.sweep_seconds;
  rep.act_order = !res.q.g_idx.empty();
  rep.bits_per_weight = storage_bits_per_weight(spec, rep.out_features, rep.in_features, rep.act_order);
  rep.dead_columns = res.stats.dead_columns;
  rep.damp_retries = res.stats.damp_retries;
  return std::move(res.q);
}

}  // namespace

Status quantize_linear_cuda(Model& m, const PtqOptions& o, PtqResult& r, int layer, const std::string& name,
                            const QuantSpec& spec, InputStats& st, CudaCompressContext& ctx) {
  const auto t0 = std::chrono::steady_clock::now();
  const LinearWeight& lw = layer < 0 ? m.weights().lm_head : *m.mutable_weights().layers[layer].linear(name);
  const int64_t n = lw.out_features, k = lw.in_features;
  const std::string module = linear_module_name(m, layer, name);
  using Slot = CudaCompressContext::Slot;
  const View w = ctx.scratch(Slot::kW, Shape{n, k}, DType::kF32);
  const View w_hat = ctx.scratch(Slot::kWHat, Shape{n, k}, DType::kF32);
  RETURN_IF_ERROR(cast_cuda(w, lw.weight, ctx.stream()));
  LinearReport rep = make_report(m, layer, name, spec, false);
  ASSIGN_OR_RETURN(QuantizedLinear q, solve(o, r, spec, st, ctx, w, w_hat, module, rep));

  const auto t_measure = std::chrono::steady_clock::now();
  const View gram = st.device_gram();
  double base = -1;
  ASSIGN_OR_RETURN(rep.rel_error, relative_output_error_cuda(ctx, w, w_hat, gram, &base));
  if (o.method == PtqMethod::kRtn) {
    rep.rtn_rel_error = rep.rel_error;
  } else {
    const View rtn_hat = ctx.scratch(Slot::kRtnHat, Shape{n, k}, DType::kF32);
    RETURN_IF_ERROR(rtn_quantize_cuda(ctx, w, spec, rtn_hat, module, false).status());
    ASSIGN_OR_RETURN(rep.rtn_rel_error, relative_output_error_cuda(ctx, w, rtn_hat, gram, &base));
  }
  r.phases.measure += seconds_since(t_measure);

  const auto t_write = std::chrono::steady_clock::now();
  RETURN_IF_ERROR(write_back(m, layer, name, ctx, w_hat));
  ctx.backend().synchronize();
  r.phases.write_back += seconds_since(t_write);
  rep.seconds = seconds_since(t0);
  log_report(rep, o.quiet);
  record(r, std::move(rep), std::move(q));
  return Status::ok();
}

#else

Status quantize_linear_cuda(Model&, const PtqOptions&, PtqResult&, int, const std::string& name, const QuantSpec&,
                            InputStats&, CudaCompressContext&) {
  return unsupported("{}: GPU quantization needs a build with CUDA", name);
}

#endif

}  // namespace compactor::ptq_detail
