// CudaDecodeLoop (see cuda_decode.h). Test: build-cuda/tests/test_cuda_model --gtest_filter='*DecodeLoop*'.
#include "bench/cuda_decode.h"

#ifdef COMPACTOR_HAS_CUDA

namespace compactor {

Result<std::unique_ptr<CudaDecodeLoop>> CudaDecodeLoop::create(Model& model, CudaBackend& backend, KvCache& cache,
                                                               const SampleParams& sampling, int max_steps,
                                                               GraphMode graphs) {
  if (&model.backend() != static_cast<Backend*>(&backend))
    return invalid_argument("decode loop: the model is not on this CUDA backend");
  if (max_steps < 1) return invalid_argument("decode loop: max_steps {} < 1", max_steps);
  for (int b = 0; b < cache.batch; ++b)
    if (cache.lengths[b] < 1 || cache.lengths[b] + max_steps > cache.capacity)
      return invalid_argument("decode loop: sequence {} has {} tokens; {} more steps need a KV cache of {} (it holds {})",
                              b, cache.lengths[b], max_steps, cache.lengths[b] + max_steps, cache.capacity);
  std::unique_ptr<CudaDecodeLoop> loop(new CudaDecodeLoop(model, backend, cache));
  loop->sampling_ = sampling;
  loop->mode_ = graphs;
  loop->batch_ = cache.batch;
  loop->max_steps_ = max_steps;
  loop->ids_ = backend.alloc(Shape{cache.batch}, DType::kI32);
  loop->past_ = backend.alloc(Shape{cache.batch}, DType::kI32);
  loop->step_ = backend.alloc(Shape{1}, DType::kI32);
  loop->history_ = backend.alloc(Shape{cache.batch, max_steps + 2}, DType::kI32);
  loop->dummy_ids_.assign(cache.batch, 0);
  return loop;
}

CudaDecodeLoop::~CudaDecodeLoop() { be_.clear_device_args(); }

Status CudaDecodeLoop::enqueue_step() {
  ForwardRequest req{dummy_ids_.data(), BatchLayout{batch_, 1}, LogitsMode::kLast};
  ASSIGN_OR_RETURN(View logits, model_.forward(req, cache_));
  RETURN_IF_ERROR(be_.sample(ids_.as<int32_t>(), logits, sampling_, step_.as<int32_t>(), history_.as<int32_t>(),
                             max_steps_ + 2));
  return be_.decode_advance(past_.as<int32_t>(), batch_, step_.as<int32_t>());
}

Status CudaDecodeLoop::start(View prefill_logits) {
  if (prefill_logits.rows() != batch_)
    return invalid_argument("decode loop: prefill logits have {} rows for batch {}", prefill_logits.rows(), batch_);
  const int32_t zero = 0;
  be_.copy_from_host(&zero, step_);
  be_.copy_from_host(cache_.lengths.data(), past_);
  RETURN_IF_ERROR(be_.sample(ids_.as<int32_t>(), prefill_logits, sampling_, step_.as<int32_t>(),
                             history_.as<int32_t>(), max_steps_ + 2));
  const int32_t one = 1;
  be_.copy_from_host(&one, step_);  // copy_from_host waits, so the sample above has run
  be_.set_device_args(CudaDeviceArgs{ids_.as<int32_t>(), past_.as<int32_t>(), cache_.capacity});
  RETURN_IF_ERROR(enqueue_step());  // warm-up: scratch, workspaces and tables reach their size
  be_.synchronize();
  steps_ = 1;
  start_lengths_ = cache_.lengths;
  if (mode_ == GraphMode::kOn) {
    const Status st = capture();
    if (!st.is_ok()) graph_error_ = st.message();
  }
  return Status::ok();
}

Status CudaDecodeLoop::capture() {
  RETURN_IF_ERROR(be_.begin_capture());
  const Status queued = enqueue_step();
  auto graph = be_.end_capture();
  cache_.lengths = start_lengths_;  // the captured forward advanced the host lengths; nothing ran
  RETURN_IF_ERROR(queued);
  if (!graph.is_ok()) return graph.status();
  graph_ = std::move(graph).value();
  return Status::ok();
}

Status CudaDecodeLoop::step() {
  if (steps_ >= max_steps_) return invalid_argument("decode loop: all {} steps taken", max_steps_);
  if (graph_.valid()) {
    RETURN_IF_ERROR(be_.replay(graph_));
    for (int32_t& len : cache_.lengths) ++len;
  } else {
    RETURN_IF_ERROR(enqueue_step());  // forward advances the host lengths itself
  }
  ++steps_;
  return Status::ok();
}

Status CudaDecodeLoop::rewind() {
  cache_.lengths = start_lengths_;
  be_.copy_from_host(start_lengths_.data(), past_);
  const int32_t next = 2;  // history slots 0 (prefill sample) and 1 (warm-up step) are taken
  be_.copy_from_host(&next, step_);
  steps_ = 1;
  return Status::ok();
}

Result<std::vector<std::vector<int32_t>>> CudaDecodeLoop::tokens() {
  std::vector<int32_t> flat(static_cast<size_t>(batch_) * (max_steps_ + 2));
  be_.copy_to_host(history_, flat.data());
  std::vector<std::vector<int32_t>> out(batch_);
  for (int b = 0; b < batch_; ++b)
    out[b].assign(flat.begin() + static_cast<int64_t>(b) * (max_steps_ + 2),
                  flat.begin() + static_cast<int64_t>(b) * (max_steps_ + 2) + steps_ + 1);
  return out;
}

}  // namespace compactor

#endif  // COMPACTOR_HAS_CUDA
