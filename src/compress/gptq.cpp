#include "compress/gptq.h"

#include <algorithm>

#include "compress/quant_grid.h"

namespace compactor {

namespace {

// Group parameters per output row from input rows [k0, k1) of a [K, N]-transposed weight.
void range_params(const float* wt, int64_t n_out, int64_t k0, int64_t k1, const QuantSpec& spec,
                  std::vector<QParams>& out) {
  std::vector<float> lo(wt + k0 * n_out, wt + (k0 + 1) * n_out), hi = lo;
  for (int64_t k = k0 + 1; k < k1; ++k)
    for (int64_t n = 0; n < n_out; ++n) {
      lo[n] = std::min(lo[n], wt[k * n_out + n]);
      hi[n] = std::max(hi[n], wt[k * n_out + n]);
    }
  out.resize(n_out);
  for (int64_t n = 0; n < n_out; ++n) out[n] = qparams_from_range(lo[n], hi[n], spec);
}

class GptqPolicy final : public ObsColumnPolicy {
 public:
  GptqPolicy(const GptqOptions& o, const std::vector<int32_t>& perm, QuantizedLinear& q, const float* w)
      : opts_(o), perm_(perm), q_(q), n_(q.out_features), k_(q.in_features), max_code_(quant_max_code(o.spec.bits)) {
    if (opts_.static_groups && opts_.spec.group_size > 0) precompute_static_groups(w);
    if (opts_.act_order && !opts_.static_groups && opts_.spec.group_size > 0) q_.g_idx.assign(k_, 0);
  }

  void decide(int64_t pos, float* w, const float* wt) override {
    const int64_t col = perm_[pos];
    const std::vector<QParams>& p = params_for(pos, col, wt);
    for (int64_t n = 0; n < n_; ++n) {
      const float code = quantize_code(w[n], p[n], max_code_);
      q_.codes[n * k_ + col] = static_cast<uint8_t>(code);
      w[n] = dequantize_code(code, p[n]);
    }
  }

 private:
  // Static groups: parameters of natural group g from the weights before any error feedback.
  void precompute_static_groups(const float* w) {
    const int64_t gs = opts_.spec.group_size, groups = k_ / gs;
    std::vector<float> wt(gs * n_);
    static_.resize(groups);
    for (int64_t g = 0; g < groups; ++g) {
      for (int64_t k = 0; k < gs; ++k)
        for (int64_t n = 0; n < n_; ++n) wt[k * n_ + n] = w[n * k_ + g * gs + k];
      range_params(wt.data(), n_, 0, gs, opts_.spec, static_[g]);
      store(g, static_[g]);
    }
  }

  void store(int64_t g, const std::vector<QParams>& p) {
    const int64_t groups = q_.groups();
    for (int64_t n = 0; n < n_; ++n) {
      q_.scales[n * groups + g] = p[n].scale;
      q_.zeros[n * groups + g] = p[n].zero;
    }
  }

  const std::vector<QParams>& params_for(int64_t pos, int64_t col, const float* wt) {
    const int64_t gs = opts_.spec.group_size;
    if (gs == 0) {
      // Per-channel: one grid per output row from all (dead-zeroed) weights, as gptq.py does.
      if (pos == 0) {
        range_params(wt, n_, 0, k_, opts_.spec, current_);
        store(0, current_);
      }
      return current_;
    }
    if (!static_.empty()) return static_[col / gs];
    // Dynamic groups follow the sweep order; their grid comes from the error-updated weights.
    const int64_t g = pos / gs;
    if (pos % gs == 0) {
      range_params(wt, n_, pos, std::min(k_, pos + gs), opts_.spec, current_);
      store(g, current_);
    }
    if (!q_.g_idx.empty()) q_.g_idx[col] = static_cast<int32_t>(g);
    return current_;
  }

  const GptqOptions& opts_;
  const std::vector<int32_t>& perm_;
  QuantizedLinear& q_;
  int64_t n_, k_;
  int max_code_;
  std::vector<QParams> current_;
  std::vector<std::vector<QParams>> static_;
};

}  // namespace

Result<GptqResult> gptq_quantize(const float* w, int64_t n_out, int64_t k_in, std::vector<float> h,
                                 const GptqOptions& opts, const std::string& module) {
  RETURN_IF_ERROR(check_quant_spec(opts.spec, k_in, module));
  if (static_cast<int64_t>(h.size()) != k_in * k_in)
    return invalid_argument("{}: Hessian has {} entries, expected {}x{}", module, h.size(), k_in, k_in);
  GptqResult r;
  r.q = make_quantized_linear(opts.spec, n_out, k_in);
  std::vector<float> work(w, w + n_out * k_in);
  // Static groups see the weights after dead inputs are zeroed, like the sweep does.
  for (int64_t i = 0; i < k_in; ++i)
    if (h[i * k_in + i] == 0.f)
      for (int64_t n = 0; n < n_out; ++n) work[n * k_in + i] = 0.f;
  const std::vector<int32_t> perm = obs_column_order(h, k_in, opts.act_order);
  GptqPolicy policy(opts, perm, r.q, work.data());
  ObsOptions obs{opts.percdamp, opts.block_size, opts.act_order};
  ASSIGN_OR_RETURN(r.stats, obs_sweep(work.data(), n_out, k_in, std::move(h), perm, obs, policy, module));
  return r;
}

}  // namespace compactor
