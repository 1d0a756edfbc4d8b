// AWQ as a block compressor (ptq.h): one pass over the block's float activations, the scale search
// per linear group with the fold into the group's producer, the clipping search, then RTN.
#include <chrono>
#include <map>

#include "compress/awq.h"
#include "compress/ptq_internal.h"
#include "compress/quant_grid.h"

namespace compactor::ptq_detail {

namespace {

struct LinearState {
  std::vector<float> w, original;  // [N, K] current (scaled) and as loaded
  int64_t n = 0, k = 0;
  std::optional<QuantSpec> spec;
  bool has_bias = false, changed = false;
  float alpha = -1.f;
};

struct BlockState {
  std::map<std::string, LinearState> linears;
  std::map<std::string, std::vector<float>> norms;        // attn_norm, mlp_norm
  std::map<std::string, bool> norm_changed;
  std::map<std::string, std::vector<float>> gram, original_gram;  // per tap
};

// What produces a group's input: a norm weight (divide it by s) or a linear (divide its rows by s).
struct Producer {
  bool is_norm = true;
  std::string name;
};

class AwqCompressor final : public BlockCompressor {
 public:
  AwqCompressor(const PtqOptions& o, PtqResult& r) : o_(o), r_(r) {}

  Status compress_block(BlockContext& ctx) override {
    Model& m = ctx.model();
    const int l = ctx.layer();
    ASSIGN_OR_RETURN(auto stats, ctx.collect({"attn_norm", "attn_output", "ffn_norm", "ffn_act"}));
    BlockState b;
    RETURN_IF_ERROR(load(m, l, stats, b));
    search(b, {"q", "k", "v"}, "attn_norm", {true, "attn_norm"}, stats);
    const LinearState& v = b.linears.at("v");
    if (v.n == b.linears.at("o").k && !v.has_bias) search(b, {"o"}, "attn_output", {false, "v"}, stats);
    search(b, {"gate", "up"}, "ffn_norm", {true, "mlp_norm"}, stats);
    if (!b.linears.at("up").has_bias) search(b, {"down"}, "ffn_act", {false, "up"}, stats);
    return apply(m, l, b);
  }

 private:
  Status load(Model& m, int l, std::map<std::string, InputStats>& stats, BlockState& b) {
    LayerWeights& lw = m.mutable_weights().layers[l];
    for (const char* name : {"q", "k", "v", "o", "gate", "up", "down"}) {
      LinearState s;
      const LinearWeight& w = *lw.linear(name);
      s.w = read_linear(m, w);
      s.original = s.w;
      s.n = w.out_features;
      s.k = w.in_features;
      s.has_bias = w.bias.data != nullptr;
      ASSIGN_OR_RETURN(s.spec, linear_spec(m, o_, l, name));
      b.linears[name] = std::move(s);
    }
    b.norms["attn_norm"] = read_vector(m, lw.attn_norm);
    b.norms["mlp_norm"] = read_vector(m, lw.mlp_norm);
    for (auto& [tap, st] : stats) {
      b.gram[tap] = st.gram();
      b.original_gram[tap] = b.gram[tap];
    }
    return Status::ok();
  }

  void search(BlockState& b, const std::vector<std::string>& group, const std::string& tap, const Producer& producer,
              std::map<std::string, InputStats>& stats) {
    std::vector<AwqLinear> members;
    for (const std::string& name : group) {
      const LinearState& s = b.linears.at(name);
      if (s.spec) members.push_back(AwqLinear{s.w.data(), s.n, *s.spec});
    }
    if (members.empty()) return;
    const int64_t k = b.linears.at(group.front()).k;
    AwqScaleResult res = awq_search_scales(members, k, stats.at(tap).mean_abs(), b.gram.at(tap), o_.awq);
    for (const std::string& name : group) b.linears.at(name).alpha = res.alpha;
    if (res.alpha == 0.f) return;
    for (const std::string& name : group) {
      LinearState& s = b.linears.at(name);
      scale_columns(s.w.data(), s.n, s.k, res.scales);
      s.changed = true;
    }
    if (producer.is_norm) {
      divide_elements(b.norms.at(producer.name).data(), res.scales);
      b.norm_changed[producer.name] = true;
    } else {
      LinearState& p = b.linears.at(producer.name);
      divide_rows(p.w.data(), p.n, p.k, res.scales);
      p.changed = true;
    }
    scale_gram(b.gram.at(tap), res.scales);
  }

  Status apply(Model& m, int l, BlockState& b) {
    for (const char* name : {"q", "k", "v", "o", "gate", "up", "down"}) {
      LinearState& s = b.linears.at(name);
      const std::string tap = input_tap(name);
      if (s.spec && !o_.awq_fold_only) {
        RETURN_IF_ERROR(quantize(m, l, name, s, b.gram.at(tap), b.original_gram.at(tap)));
      } else if (s.changed) {
        RETURN_IF_ERROR(replace_linear_f32(m, l, name, s.w));
        r_.modified_dense.push_back(linear_module_name(m, l, name) + ".weight");
      }
    }
    const TensorNames& names = m.arch().names;
    for (const auto& [norm, changed] : b.norm_changed) {
      if (!changed) continue;
      RETURN_IF_ERROR(replace_norm_f32(m, l, norm, b.norms.at(norm)));
      r_.modified_dense.push_back(layer_tensor_name(norm == "attn_norm" ? names.attn_norm : names.mlp_norm, l));
    }
    return Status::ok();
  }

  Status quantize(Model& m, int l, const std::string& name, LinearState& s, const std::vector<float>& gram,
                  const std::vector<float>& original_gram) {
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<float> clipped = s.w;
    // llm-awq leaves q/k unclipped: their error is amplified through the q·k product.
    if (o_.awq_clip && name != "q" && name != "k") awq_clip(clipped.data(), s.n, s.k, *s.spec, gram, o_.awq);
    QuantizedLinear q = rtn_quantize(clipped.data(), s.n, s.k, *s.spec);
    const std::vector<float> deq = dequantize_linear(q);
    LinearReport rep = make_report(m, l, name, *s.spec, false);
    rep.rel_error = relative_output_error(s.w.data(), deq.data(), s.n, s.k, gram.data());
    const std::vector<float> rtn = dequantize_linear(rtn_quantize(s.original.data(), s.n, s.k, *s.spec));
    rep.rtn_rel_error = relative_output_error(s.original.data(), rtn.data(), s.n, s.k, original_gram.data());
    rep.awq_alpha = s.alpha;
    RETURN_IF_ERROR(replace_linear_f32(m, l, name, deq));
    rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    log_report(rep, o_.quiet);
    record(r_, std::move(rep), std::move(q));
    return Status::ok();
  }

  const PtqOptions& o_;
  PtqResult& r_;
};

}  // namespace

std::unique_ptr<BlockCompressor> make_awq_compressor(const PtqOptions& o, PtqResult& r) {
  return std::make_unique<AwqCompressor>(o, r);
}

}  // namespace compactor::ptq_detail
