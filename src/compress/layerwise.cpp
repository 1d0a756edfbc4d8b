#include "compress/layerwise.h"

#include <algorithm>
#include <chrono>

namespace compactor {

const float* host_f32_rows(Backend& backend, View v, std::vector<float>& buffer) {
  if (v.device == Device::kCpu && v.dtype == DType::kF32) return v.as<float>();
  buffer.resize(v.numel());
  copy_to_host_f32(backend, v, buffer.data());
  return buffer.data();
}

Model& BlockContext::model() const { return driver_.model(); }

int64_t BlockContext::tokens() const {
  return static_cast<int64_t>(driver_.calibration().samples) * driver_.calibration().seqlen;
}

CudaCompressContext* BlockContext::gpu() const { return driver_.gpu(); }

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

Result<std::map<std::string, InputStats>> BlockContext::collect(const std::vector<std::string>& taps) {
  Model& m = driver_.model();
  const ModelConfig& c = m.config();
  std::map<std::string, InputStats> stats;
  for (const std::string& t : taps) {
    const int64_t width = t == "attn_output" ? c.num_heads * c.head_dim : t == "ffn_act" ? c.intermediate_size : c.hidden_size;
    if (t != "attn_norm" && t != "attn_output" && t != "ffn_norm" && t != "ffn_act")
      return invalid_argument("collect: '{}' is not a linear-input tap (attn_norm, attn_output, ffn_norm, ffn_act)", t);
    ASSIGN_OR_RETURN(InputStats st, driver_.new_stats(width));
    stats.emplace(t, std::move(st));
  }
  // The block runs only as far as the last requested tap.
  std::string last;
  for (const char* t : {"attn_norm", "attn_output", "ffn_norm", "ffn_act"})
    if (stats.count(t)) last = t;
  Backend& be = m.backend();
  const int layer = layer_;
  Status tap_status;
  double stats_seconds = 0;
  TapFn tap = [&](std::string_view name, int l, View v) {
    if (l != layer || !tap_status.is_ok()) return;
    auto it = stats.find(std::string(name));
    if (it == stats.end()) return;
    be.synchronize();  // the forward's work so far belongs to the forward's time
    const auto t0 = std::chrono::steady_clock::now();
    tap_status = it->second.add(be, v);
    be.synchronize();
    stats_seconds += seconds_since(t0);
  };
  Tensor& work = driver_.work();
  const auto t0 = std::chrono::steady_clock::now();
  RETURN_IF_ERROR(driver_.for_each_batch(driver_.hidden(), [&](View x, const BatchLayout& layout, KvCache& cache) {
    View w = View(work).row_slice(0, x.rows());
    be.copy(w, x);
    RETURN_IF_ERROR(m.forward_block(layer, w, layout, cache, &tap, last));
    return tap_status;
  }));
  be.synchronize();
  driver_.times().stats += stats_seconds;
  driver_.times().forward += seconds_since(t0) - stats_seconds;
  return stats;
}

LayerwiseDriver::LayerwiseDriver(Model& model, const CalibrationSet& calib, LayerwiseOptions opts)
    : model_(model), calib_(calib), opts_(std::move(opts)) {
  batch_ = static_cast<int>(std::clamp<int64_t>(opts_.batch_tokens / std::max(1, calib.seqlen), 1, calib.samples));
  if (model.backend().device() == Device::kCuda) {
    Result<std::shared_ptr<CudaCompressContext>> ctx = make_cuda_compress_context(model.backend());
    if (ctx.is_ok()) {
      gpu_ = std::move(ctx).value();
    } else {
      gpu_status_ = ctx.status();
    }
  }
}

Result<InputStats> LayerwiseDriver::new_stats(int64_t width) const {
  if (gpu_ != nullptr) return InputStats::on_device(gpu_, width);
  return InputStats(width);
}

KvCache& LayerwiseDriver::cache_for(int batch) {
  auto it = caches_.find(batch);
  if (it != caches_.end()) return it->second;
  // One layer's storage, shared by every layer index: blocks run one at a time and each pass
  // rewrites the positions it reads.
  const ModelConfig& c = model_.config();
  Backend& be = model_.backend();
  KvCache cache;
  cache.batch = batch;
  cache.capacity = calib_.seqlen;
  cache.lengths.assign(batch, 0);
  const Shape shape{batch, calib_.seqlen, c.num_kv_heads * c.head_dim};
  Tensor k = be.alloc(shape, be.activation_dtype()), v = be.alloc(shape, be.activation_dtype());
  cache.k.assign(c.num_layers, k);
  cache.v.assign(c.num_layers, v);
  return caches_.emplace(batch, std::move(cache)).first->second;
}

Status LayerwiseDriver::for_each_batch(View src, const std::function<Status(View, const BatchLayout&, KvCache&)>& fn) {
  const int64_t seqlen = calib_.seqlen;
  for (int s0 = 0; s0 < calib_.samples; s0 += batch_) {
    const int b = std::min(batch_, calib_.samples - s0);
    const BatchLayout layout{b, static_cast<int>(seqlen), nullptr};
    RETURN_IF_ERROR(fn(src.row_slice(s0 * seqlen, b * seqlen), layout, cache_for(b)));
  }
  return Status::ok();
}

Status LayerwiseDriver::run(BlockCompressor& compressor) {
  const ModelConfig& c = model_.config();
  Backend& be = model_.backend();
  RETURN_IF_ERROR(gpu_status_);
  if (calib_.seqlen > c.max_position_embeddings)
    return invalid_argument("--calib-seqlen {} exceeds the model's maximum of {} positions", calib_.seqlen,
                            c.max_position_embeddings);
  const int64_t rows = static_cast<int64_t>(calib_.samples) * calib_.seqlen;
  hidden_ = be.alloc(Shape{rows, c.hidden_size}, be.activation_dtype());
  work_ = be.alloc(Shape{static_cast<int64_t>(batch_) * calib_.seqlen, c.hidden_size}, be.activation_dtype());
  const auto t_embed = std::chrono::steady_clock::now();
  for (int s = 0; s < calib_.samples; ++s)
    RETURN_IF_ERROR(model_.embed(View(hidden_).row_slice(static_cast<int64_t>(s) * calib_.seqlen, calib_.seqlen),
                                 calib_.sample(s)));
  be.synchronize();
  times_.embed += seconds_since(t_embed);
  for (int l = 0; l < c.num_layers; ++l) {
    const auto t0 = std::chrono::steady_clock::now();
    BlockContext ctx(*this, l);
    RETURN_IF_ERROR(compressor.compress_block(ctx).with_context(fmt::format("layer {}", l)));
    be.synchronize();
    const auto t_forward = std::chrono::steady_clock::now();
    RETURN_IF_ERROR(for_each_batch(hidden_, [&](View x, const BatchLayout& layout, KvCache& cache) {
      return model_.forward_block(l, x, layout, cache, nullptr);
    }));
    be.synchronize();
    times_.forward += seconds_since(t_forward);
    if (opts_.on_block)
      opts_.on_block(l, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return Status::ok();
}

}  // namespace compactor
