#include "eval/kl_divergence.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <numeric>

#include "core/progress.h"
#include "io/safetensors.h"

namespace compactor {

namespace {

constexpr const char* kBaseLogitsFormat = "compactor-base-logits";
constexpr const char* kBaseLogitsVersion = "1";

int argmax_row(const float* x, int64_t n) { return static_cast<int>(std::max_element(x, x + n) - x); }

double logsumexp_row(const float* x, int64_t n) {
  const float m = *std::max_element(x, x + n);
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += std::exp(static_cast<double>(x[i]) - m);
  return m + std::log(s);
}

template <typename T>
Result<std::vector<T>> read_tensor(const SafetensorsFile& f, const std::string& name, DType dtype, Shape shape) {
  const TensorEntry* e = f.find(name);
  if (!e) return corrupt("{}: missing tensor '{}' (not a compactor base-logits file?)", f.path().string(), name);
  if (e->dtype != dtype || !(e->shape == shape))
    return corrupt("{}: tensor '{}' is {} {}, expected {} {}", f.path().string(), name, dtype_name(e->dtype),
                   e->shape.str(), dtype_name(dtype), shape.str());
  std::vector<T> out(static_cast<size_t>(shape.numel()));
  std::memcpy(out.data(), e->data, out.size() * sizeof(T));
  return out;
}

// One batch of windows: ids and targets, and the host logits of the models.
struct WindowBatch {
  int windows = 0, ctx = 0;
  std::vector<int32_t> ids, targets;
  std::vector<int64_t> rows;  // scored rows (target >= 0), in order
};

Result<std::vector<float>> host_logits(Model& model, const WindowBatch& wb) {
  KvCache cache = model.make_kv_cache(wb.windows, wb.ctx);
  ASSIGN_OR_RETURN(View logits, model.forward({wb.ids.data(), BatchLayout{wb.windows, wb.ctx}, LogitsMode::kAll}, cache));
  std::vector<float> host(static_cast<size_t>(logits.numel()));
  copy_to_host_f32(model.backend(), logits, host.data());
  return host;
}

}  // namespace

void log_softmax_row(const float* logits, int64_t vocab, float* out) {
  const double lse = logsumexp_row(logits, vocab);
  for (int64_t i = 0; i < vocab; ++i) out[i] = static_cast<float>(logits[i] - lse);
}

TokenComparison compare_token(const float* base_logits, const float* model_logits, int64_t vocab, int32_t target) {
  const double lse_b = logsumexp_row(base_logits, vocab), lse_m = logsumexp_row(model_logits, vocab);
  double kld = 0;
  for (int64_t i = 0; i < vocab; ++i) {
    const double lp = base_logits[i] - lse_b, lq = model_logits[i] - lse_m;
    kld += std::exp(lp) * (lp - lq);
  }
  TokenComparison t;
  t.kld = std::max(0.0, kld);  // rounding can leave a tiny negative value for identical rows
  t.p_base = std::exp(base_logits[target] - lse_b);
  t.p_model = std::exp(model_logits[target] - lse_m);
  t.nll_base = lse_b - base_logits[target];
  t.nll_model = lse_m - model_logits[target];
  t.same_top1 = argmax_row(base_logits, vocab) == argmax_row(model_logits, vocab);
  return t;
}

void top_k_logprobs(const float* logits, int64_t vocab, int k, int32_t* ids, float* logp) {
  std::vector<int32_t> idx(static_cast<size_t>(vocab));
  std::iota(idx.begin(), idx.end(), 0);
  const auto by_prob = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), by_prob);
  const double lse = logsumexp_row(logits, vocab);
  for (int i = 0; i < k; ++i) {
    ids[i] = idx[i];
    logp[i] = static_cast<float>(logits[idx[i]] - lse);
  }
}

TokenComparison compare_token_topk(const int32_t* base_ids, const float* base_logp, int k, float base_target_logp,
                                   const float* model_logits, int64_t vocab, int32_t target) {
  const double lse_m = logsumexp_row(model_logits, vocab);
  double kld = 0, p_in = 0, q_in = 0;
  for (int i = 0; i < k; ++i) {
    const double lp = base_logp[i], lq = model_logits[base_ids[i]] - lse_m;
    kld += std::exp(lp) * (lp - lq);
    p_in += std::exp(lp);
    q_in += std::exp(lq);
  }
  // The tail {tokens outside the base's top-k} as one outcome.
  const double p_tail = std::max(0.0, 1.0 - p_in), q_tail = std::max(1e-30, 1.0 - q_in);
  if (p_tail > 1e-12) kld += p_tail * (std::log(p_tail) - std::log(q_tail));
  TokenComparison t;
  t.kld = std::max(0.0, kld);
  t.p_base = std::exp(static_cast<double>(base_target_logp));
  t.p_model = std::exp(model_logits[target] - lse_m);
  t.nll_base = -base_target_logp;
  t.nll_model = lse_m - model_logits[target];
  t.same_top1 = base_ids[0] == argmax_row(model_logits, vocab);
  return t;
}

KlSummary summarize_kl(const std::vector<TokenComparison>& tokens, const BootstrapOptions& boot) {
  KlSummary s;
  s.n = static_cast<int64_t>(tokens.size());
  if (tokens.empty()) return s;
  std::vector<double> kld, top1, dp;
  double nll_b = 0, nll_m = 0, dp2 = 0;
  for (const auto& t : tokens) {
    kld.push_back(t.kld);
    top1.push_back(t.same_top1 ? 1.0 : 0.0);
    dp.push_back(t.p_model - t.p_base);
    dp2 += dp.back() * dp.back();
    nll_b += t.nll_base;
    nll_m += t.nll_model;
  }
  s.kld = estimate_mean(kld, boot);
  s.top1 = estimate_mean(top1, boot);
  s.delta_p = estimate_mean(dp, boot);
  s.rms_delta_p = std::sqrt(dp2 / static_cast<double>(tokens.size()));
  s.kld_median = quantile(kld, 0.5);
  s.kld_p90 = quantile(kld, 0.9);
  s.kld_p99 = quantile(kld, 0.99);
  s.kld_p999 = quantile(kld, 0.999);
  s.kld_max = *std::max_element(kld.begin(), kld.end());
  s.ppl_base = std::exp(nll_b / static_cast<double>(tokens.size()));
  s.ppl_model = std::exp(nll_m / static_cast<double>(tokens.size()));
  return s;
}

std::map<std::string, std::string> kl_settings_meta(const PerplexityOptions& opts, const std::string& data_sha256) {
  return {{"data_sha256", data_sha256},
          {"ctx", std::to_string(opts.ctx)},
          {"bos", opts.bos == BosMode::kPrepend ? "true" : "false"},
          {"stride", std::to_string(opts.stride)},
          {"limit_windows", std::to_string(opts.limit_windows)}};
}

Status save_base_logits(const std::filesystem::path& path, const BaseLogits& b) {
  const int64_t p = b.positions(), n = static_cast<int64_t>(b.text_tokens.size());
  auto cpu = [](const void* data, Shape s, DType d) { return View{const_cast<void*>(data), s, d, Device::kCpu}; };
  std::vector<NamedView> tensors = {
      {"text_tokens", cpu(b.text_tokens.data(), Shape{n}, DType::kI32)},
      {"targets", cpu(b.targets.data(), Shape{p}, DType::kI32)},
      {"topk_ids", cpu(b.topk_ids.data(), Shape{p, b.k}, DType::kI32)},
      {"topk_logp", cpu(b.topk_logp.data(), Shape{p, b.k}, DType::kF32)},
      {"target_logp", cpu(b.target_logp.data(), Shape{p}, DType::kF32)}};
  std::map<std::string, std::string> meta = b.meta;
  meta.insert_or_assign("format", std::string(kBaseLogitsFormat));
  meta.insert_or_assign("version", std::string(kBaseLogitsVersion));
  meta.insert_or_assign("k", std::to_string(b.k));
  meta.insert_or_assign("vocab_size", std::to_string(b.vocab));
  return write_safetensors(path, tensors, meta);
}

Result<BaseLogits> load_base_logits(const std::filesystem::path& path) {
  ASSIGN_OR_RETURN(std::shared_ptr<SafetensorsFile> f, SafetensorsFile::open(path));
  BaseLogits b;
  b.meta = f->metadata();
  if (b.meta["format"] != kBaseLogitsFormat || b.meta["version"] != kBaseLogitsVersion)
    return corrupt("{}: not a compactor base-logits file (format '{}', version '{}'; expected {} {})", path.string(),
                   b.meta["format"], b.meta["version"], kBaseLogitsFormat, kBaseLogitsVersion);
  const TensorEntry* targets = f->find("targets");
  const TensorEntry* text = f->find("text_tokens");
  if (!targets || !text || targets->shape.ndim != 1 || text->shape.ndim != 1)
    return corrupt("{}: missing or malformed 'targets'/'text_tokens'", path.string());
  try {
    b.k = std::stoi(b.meta["k"]);
    b.vocab = std::stoll(b.meta["vocab_size"]);
  } catch (const std::exception&) {
    return corrupt("{}: metadata k/vocab_size are not integers", path.string());
  }
  const int64_t p = targets->shape[0];
  if (b.k <= 0 || b.k > b.vocab) return corrupt("{}: k = {} outside [1, vocab_size {}]", path.string(), b.k, b.vocab);
  ASSIGN_OR_RETURN(b.text_tokens, read_tensor<int32_t>(*f, "text_tokens", DType::kI32, Shape{text->shape[0]}));
  ASSIGN_OR_RETURN(b.targets, read_tensor<int32_t>(*f, "targets", DType::kI32, Shape{p}));
  ASSIGN_OR_RETURN(b.topk_ids, read_tensor<int32_t>(*f, "topk_ids", DType::kI32, Shape{p, b.k}));
  ASSIGN_OR_RETURN(b.topk_logp, read_tensor<float>(*f, "topk_logp", DType::kF32, Shape{p, b.k}));
  ASSIGN_OR_RETURN(b.target_logp, read_tensor<float>(*f, "target_logp", DType::kF32, Shape{p}));
  for (int32_t id : b.topk_ids)
    if (id < 0 || id >= b.vocab) return corrupt("{}: token id {} outside the vocabulary {}", path.string(), id, b.vocab);
  return b;
}

namespace {

Status check_models(Model& model, Model* base_model, const BaseLogits* saved, const std::vector<int32_t>& tokens) {
  const int64_t v = model.config().vocab_size;
  if (base_model && base_model->config().vocab_size != v)
    return invalid_argument("--base: the base model's vocabulary ({}) differs from the model's ({})",
                            base_model->config().vocab_size, v);
  if (saved && saved->vocab != v)
    return invalid_argument("--base: the saved logits have vocabulary {}, the model {}", saved->vocab, v);
  if (saved && saved->text_tokens != tokens)
    return invalid_argument("--base: the saved logits were made from other text tokens ({} vs {} tokens): another "
                            "data file or tokenizer", saved->text_tokens.size(), tokens.size());
  return Status::ok();
}

// Appends the top-k of the given rows to `save`.
void append_topk(const std::vector<float>& logits, const WindowBatch& wb, int64_t vocab, BaseLogits& save) {
  const size_t first = save.targets.size(), n = wb.rows.size(), k = static_cast<size_t>(save.k);
  save.targets.resize(first + n);
  save.topk_ids.resize((first + n) * k);
  save.topk_logp.resize((first + n) * k);
  save.target_logp.resize(first + n);
#pragma omp parallel for schedule(dynamic, 16)
  for (int64_t i = 0; i < static_cast<int64_t>(n); ++i) {
    const float* row = logits.data() + wb.rows[i] * vocab;
    const int32_t target = wb.targets[wb.rows[i]];
    top_k_logprobs(row, vocab, save.k, &save.topk_ids[(first + i) * k], &save.topk_logp[(first + i) * k]);
    save.targets[first + i] = target;
    save.target_logp[first + i] = static_cast<float>(row[target] - logsumexp_row(row, vocab));
  }
}

}  // namespace

Result<KlRun> evaluate_kl(Model& model, Model* base_model, const BaseLogits* base_saved,
                          const std::vector<int32_t>& tokens, int32_t bos_id, const KlOptions& opts, BaseLogits* save) {
  RETURN_IF_ERROR(check_models(model, base_model, base_saved, tokens));
  if (opts.ppl.bos == BosMode::kPrepend && bos_id < 0) return invalid_argument("the tokenizer has no BOS token; use --no-bos");
  ASSIGN_OR_RETURN(PerplexityPlan plan, plan_perplexity(static_cast<int64_t>(tokens.size()),
                                                        model.config().max_position_embeddings, opts.ppl));
  const int64_t vocab = model.config().vocab_size;
  const int ctx = opts.ppl.ctx;
  const int batch = opts.ppl.batch > 0 ? opts.ppl.batch : std::max(1, 1024 / ctx);
  const int64_t n_windows = static_cast<int64_t>(plan.starts.size());
  if (save) {
    save->k = opts.save_topk;
    save->vocab = vocab;
    save->text_tokens = tokens;
  }
  KlRun run;
  run.windows = n_windows;
  const auto t0 = std::chrono::steady_clock::now();
  Progress progress("kl-divergence", n_windows, opts.ppl.quiet);
  int64_t saved_pos = 0;
  for (int64_t w0 = 0; w0 < n_windows; w0 += batch) {
    WindowBatch wb;
    wb.windows = static_cast<int>(std::min<int64_t>(batch, n_windows - w0));
    wb.ctx = ctx;
    wb.ids.assign(static_cast<size_t>(wb.windows) * ctx, 0);
    wb.targets.assign(wb.ids.size(), -1);
    for (int i = 0; i < wb.windows; ++i)
      fill_window(tokens, bos_id, plan, w0 + i, opts.ppl.bos, &wb.ids[i * ctx], &wb.targets[i * ctx]);
    for (int64_t r = 0; r < static_cast<int64_t>(wb.targets.size()); ++r)
      if (wb.targets[r] >= 0) wb.rows.push_back(r);
    ASSIGN_OR_RETURN(std::vector<float> m_logits, host_logits(model, wb));
    std::vector<float> b_logits;
    if (base_model) {
      ASSIGN_OR_RETURN(b_logits, host_logits(*base_model, wb));
    }
    if (save) append_topk(base_model ? b_logits : m_logits, wb, vocab, *save);
    if (base_saved && saved_pos + static_cast<int64_t>(wb.rows.size()) > base_saved->positions())
      return invalid_argument("--base: the saved logits hold {} positions, this run scores more: other settings",
                              base_saved->positions());
    if (base_model || base_saved) {
      const size_t first = run.tokens.size(), n = wb.rows.size();
      run.tokens.resize(first + n);
      bool mismatch = false;
#pragma omp parallel for schedule(dynamic, 16) reduction(|| : mismatch)
      for (int64_t i = 0; i < static_cast<int64_t>(n); ++i) {
        const int64_t r = wb.rows[i];
        const int32_t target = wb.targets[r];
        const float* mrow = m_logits.data() + r * vocab;
        if (base_model) {
          run.tokens[first + i] = compare_token(b_logits.data() + r * vocab, mrow, vocab, target);
        } else {
          const int64_t p = saved_pos + i;
          const int k = base_saved->k;
          mismatch = mismatch || base_saved->targets[p] != target;
          run.tokens[first + i] = compare_token_topk(&base_saved->topk_ids[p * k], &base_saved->topk_logp[p * k], k,
                                                     base_saved->target_logp[p], mrow, vocab, target);
        }
      }
      if (mismatch) return invalid_argument("--base: the saved logits score other tokens than this run: other settings");
    }
    saved_pos += static_cast<int64_t>(wb.rows.size());
    progress.update(w0 + wb.windows);
  }
  if (base_saved && saved_pos != base_saved->positions())
    return invalid_argument("--base: the saved logits hold {} positions, this run scores {}: other settings (--ctx, "
                            "--stride, --limit-windows, --no-bos)", base_saved->positions(), saved_pos);
  progress.finish();
  run.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return run;
}

}  // namespace compactor
