#include "compress/ptq.h"

#include <chrono>
#include <cstring>

#include "compress/gptq.h"
#include "compress/ptq_internal.h"
#include "compress/quant_grid.h"

namespace compactor {

using namespace ptq_detail;

namespace {

constexpr const char* kLinears[] = {"q", "k", "v", "o", "gate", "up", "down"};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// RTN and GPTQ: per linear group, the group's input statistics, then each linear on its own.
class GridCompressor final : public BlockCompressor {
 public:
  GridCompressor(const PtqOptions& o, PtqResult& r) : o_(o), r_(r) {}

  void set_gpu(CudaCompressContext* gpu) { gpu_ = gpu; }

  Status compress_block(BlockContext& ctx) override {
    gpu_ = ctx.gpu();
    const auto& groups = ctx.model().arch().linear_groups;
    if (o_.true_sequential) {
      for (const auto& group : groups) {
        ASSIGN_OR_RETURN(auto stats, ctx.collect({input_tap(group.front())}));
        for (const std::string& name : group) RETURN_IF_ERROR(quantize_one(ctx, name, stats.begin()->second));
      }
      return Status::ok();
    }
    std::vector<std::string> taps;
    for (const auto& group : groups) taps.push_back(input_tap(group.front()));
    ASSIGN_OR_RETURN(auto stats, ctx.collect(taps));
    for (const auto& group : groups)
      for (const std::string& name : group) RETURN_IF_ERROR(quantize_one(ctx, name, stats.at(input_tap(name))));
    return Status::ok();
  }

  // Also used for lm_head (layer -1) after the last block.
  Status quantize_linear(Model& m, int layer, const std::string& name, InputStats& st) {
    ASSIGN_OR_RETURN(std::optional<QuantSpec> spec, linear_spec(m, o_, layer, name));
    if (!spec) return Status::ok();
    if (gpu_ != nullptr && st.on_device()) return quantize_linear_cuda(m, o_, r_, layer, name, *spec, st, *gpu_);
    const auto t0 = std::chrono::steady_clock::now();
    const LinearWeight& lw = layer < 0 ? m.weights().lm_head : *m.mutable_weights().layers[layer].linear(name);
    const int64_t n = lw.out_features, k = lw.in_features;
    const std::vector<float> w = read_linear(m, lw);
    const std::string module = linear_module_name(m, layer, name);
    QuantizedLinear rtn = rtn_quantize(w.data(), n, k, *spec);
    QuantizedLinear q;
    LinearReport rep = make_report(m, layer, name, *spec, false);
    if (o_.method == PtqMethod::kGptq) {
      GptqOptions g{*spec, o_.percdamp, o_.block_size, o_.act_order, o_.static_groups};
      const auto t_solve = std::chrono::steady_clock::now();
      ASSIGN_OR_RETURN(GptqResult res, gptq_quantize(w.data(), n, k, st.hessian(), g, module));
      r_.phases.sweep += seconds_since(t_solve);
      q = std::move(res.q);
      rep = make_report(m, layer, name, *spec, !q.g_idx.empty());
      rep.dead_columns = res.stats.dead_columns;
      rep.damp_retries = res.stats.damp_retries;
    } else {
      q = rtn;
    }
    const auto t_measure = std::chrono::steady_clock::now();
    const std::vector<float> deq = dequantize_linear(q);
    const std::vector<float>& gram = st.gram();
    rep.rel_error = relative_output_error(w.data(), deq.data(), n, k, gram.data());
    rep.rtn_rel_error = o_.method == PtqMethod::kRtn
                            ? rep.rel_error
                            : relative_output_error(w.data(), dequantize_linear(rtn).data(), n, k, gram.data());
    r_.phases.measure += seconds_since(t_measure);
    RETURN_IF_ERROR(replace_linear_f32(m, layer, name, deq));
    rep.seconds = seconds_since(t0);
    log_report(rep, o_.quiet);
    record(r_, std::move(rep), std::move(q));
    return Status::ok();
  }

 private:
  Status quantize_one(BlockContext& ctx, const std::string& name, InputStats& st) {
    return quantize_linear(ctx.model(), ctx.layer(), name, st);
  }

  const PtqOptions& o_;
  PtqResult& r_;
  CudaCompressContext* gpu_ = nullptr;
};

// RTN without calibration: no inputs, so no errors are measured.
Status rtn_without_calibration(Model& m, const PtqOptions& o, PtqResult& r) {
  for (int l = -1; l < m.config().num_layers; ++l) {
    const auto t0 = std::chrono::steady_clock::now();
    for (const char* name : kLinears) {
      if (l < 0 && std::strcmp(name, "q") != 0) break;
      const std::string nm = l < 0 ? "lm_head" : name;
      ASSIGN_OR_RETURN(std::optional<QuantSpec> spec, linear_spec(m, o, l, nm));
      if (!spec) continue;
      const auto t1 = std::chrono::steady_clock::now();
      const LinearWeight& lw = l < 0 ? m.weights().lm_head : *m.mutable_weights().layers[l].linear(nm);
      const std::vector<float> w = read_linear(m, lw);
      QuantizedLinear q = rtn_quantize(w.data(), lw.out_features, lw.in_features, *spec);
      RETURN_IF_ERROR(replace_linear_f32(m, l, nm, dequantize_linear(q)));
      LinearReport rep = make_report(m, l, nm, *spec, false);
      rep.seconds = seconds_since(t1);
      log_report(rep, o.quiet);
      record(r, std::move(rep), std::move(q));
    }
    if (l >= 0) r.layer_seconds.push_back(seconds_since(t0));
  }
  return Status::ok();
}

// Statistics of lm_head's input (the final norm of the last hidden states) over the calibration set.
Result<InputStats> head_input_stats(LayerwiseDriver& driver) {
  Model& m = driver.model();
  Backend& be = m.backend();
  ASSIGN_OR_RETURN(InputStats st, driver.new_stats(m.config().hidden_size));
  Tensor& work = driver.work();
  RETURN_IF_ERROR(driver.for_each_batch(driver.hidden(), [&](View x, const BatchLayout&, KvCache&) {
    View w = View(work).row_slice(0, x.rows());
    be.rms_norm(w, x, m.weights().final_norm, static_cast<float>(m.config().rms_norm_eps));
    return st.add(be, w);
  }));
  return st;
}

// Checks every linear's spec before any work, so a bad group size fails in a second, not after
// an hour of calibration.
Status check_all_specs(const Model& m, const PtqOptions& o) {
  for (int l = -1; l < m.config().num_layers; ++l)
    for (const char* name : kLinears) {
      const std::string nm = l < 0 ? "lm_head" : name;
      RETURN_IF_ERROR(linear_spec(m, o, l, nm).status());
      if (l < 0) break;
    }
  for (const ModuleRule& rule : o.rules)
    if (!rule.keep && module_pattern_matches(rule.pattern, m.arch().names.embed.substr(0, m.arch().names.embed.size() - 7)))
      return unsupported("--override '{}': embeddings cannot be quantized (they stay in 16 bits)", rule.text);
  return Status::ok();
}

}  // namespace

Result<PtqMethod> ptq_method_from_name(const std::string& name) {
  if (name == "rtn") return PtqMethod::kRtn;
  if (name == "gptq") return PtqMethod::kGptq;
  if (name == "awq") return PtqMethod::kAwq;
  return invalid_argument("--method '{}': expected rtn, gptq or awq", name);
}

const char* ptq_method_name(PtqMethod m) {
  switch (m) {
    case PtqMethod::kRtn: return "rtn";
    case PtqMethod::kGptq: return "gptq";
    case PtqMethod::kAwq: return "awq";
  }
  return "?";
}

std::string linear_module_name(const Model& model, int layer, const std::string& name) {
  const TensorNames& n = model.arch().names;
  if (layer < 0) return n.lm_head.substr(0, n.lm_head.size() - 7);  // drop ".weight"
  const std::string* p = name == "q" ? &n.q : name == "k" ? &n.k : name == "v" ? &n.v : name == "o" ? &n.o
                       : name == "gate" ? &n.gate : name == "up" ? &n.up : &n.down;
  return layer_tensor_name(*p, layer);
}

Result<PtqResult> quantize_model(Model& model, const CalibrationSet* calib, const PtqOptions& opts) {
  const auto t0 = std::chrono::steady_clock::now();
  RETURN_IF_ERROR(check_all_specs(model, opts));
  PtqResult result;
  if (calib == nullptr) {
    if (opts.method != PtqMethod::kRtn)
      return invalid_argument("--method {} needs a calibration set (--calib FILE)", ptq_method_name(opts.method));
    RETURN_IF_ERROR(rtn_without_calibration(model, opts, result));
    result.seconds = seconds_since(t0);
    return result;
  }
  GridCompressor grid(opts, result);
  std::unique_ptr<BlockCompressor> awq;
  if (opts.method == PtqMethod::kAwq) awq = make_awq_compressor(opts, result);
  BlockCompressor& compressor = awq ? *awq : static_cast<BlockCompressor&>(grid);
  LayerwiseOptions lo;
  lo.batch_tokens = opts.batch_tokens > 0 ? opts.batch_tokens : model.backend().device() == Device::kCuda ? 8192 : 2048;
  lo.on_block = [&](int layer, double s) {
    result.layer_seconds.push_back(s);
    if (!opts.quiet) std::fprintf(stderr, "quantize: layer %d done in %.2f s\n", layer, s);
  };
  LayerwiseDriver driver(model, *calib, lo);
  RETURN_IF_ERROR(driver.run(compressor));
  ASSIGN_OR_RETURN(std::optional<QuantSpec> head_spec, linear_spec(model, opts, -1, "lm_head"));
  if (head_spec) {
    ASSIGN_OR_RETURN(InputStats st, head_input_stats(driver));
    // lm_head has no norm or linear before it to fold AWQ scales into: GPTQ for GPTQ, else RTN.
    PtqOptions head = opts;
    if (head.method == PtqMethod::kAwq) head.method = PtqMethod::kRtn;
    GridCompressor head_compressor(head, result);
    head_compressor.set_gpu(driver.gpu());
    RETURN_IF_ERROR(head_compressor.quantize_linear(model, -1, "lm_head", st));
  }
  const LayerwiseTimes& times = driver.times();
  result.phases.embed = times.embed;
  result.phases.forward = times.forward;
  result.phases.stats = times.stats;
  result.on_gpu = driver.gpu() != nullptr;
  result.seconds = seconds_since(t0);
  return result;
}

double model_bits_per_weight(const Model& model, const PtqResult& r) {
  int64_t total = 0;
  double bits = r.quantized_bits;
  auto dense = [&](View v) {
    total += v.numel();
    bits += 16.0 * v.numel();
  };
  const ModelWeights& w = model.weights();
  const ModelConfig& c = model.config();
  dense(w.embed);
  dense(w.final_norm);
  auto linear = [&](const std::string& module, const LinearWeight& lw) {
    if (r.quantized.count(module)) {
      total += lw.out_features * lw.in_features;
    } else {
      dense(lw.weight);
    }
    if (lw.bias.data) dense(lw.bias);
  };
  if (c.tie_word_embeddings && !r.quantized.count(linear_module_name(model, -1, "lm_head"))) {
    // Tied and unquantized: the embedding table already counted.
  } else {
    linear(linear_module_name(model, -1, "lm_head"), w.lm_head);
  }
  for (int l = 0; l < c.num_layers; ++l) {
    dense(w.layers[l].attn_norm);
    dense(w.layers[l].mlp_norm);
    for (const char* name : kLinears)
      linear(linear_module_name(model, l, name), *const_cast<ModelWeights&>(w).layers[l].linear(name));
  }
  return total > 0 ? bits / static_cast<double>(total) : 0.0;
}

}  // namespace compactor
