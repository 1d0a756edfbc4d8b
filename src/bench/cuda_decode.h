// A decode loop that stays on the GPU: token ids, sequence lengths and sampling live in device
// buffers, so a step needs nothing from the host; one step (forward of B×1 tokens + sampling +
// length update) is captured once into a CUDA graph and replayed per token, which removes the
// launch gaps of ~400 small kernels per step. When capture is impossible the same step runs
// eagerly (still without host transfers).
// Only built with CUDA. Test: build-cuda/tests/test_cuda_model --gtest_filter='*DecodeLoop*'.
#pragma once

#ifdef COMPACTOR_HAS_CUDA

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "model/model.h"

namespace compactor {

enum class GraphMode { kOff, kOn };

class CudaDecodeLoop {
 public:
  // cache: prefilled (lengths >= 1), capacity >= lengths + max_steps (the warm-up step counts).
  // The model, backend and
  // cache must outlive the loop; nothing else may run a forward on the model while it exists
  // (a captured graph holds the model's scratch buffers).
  static Result<std::unique_ptr<CudaDecodeLoop>> create(Model& model, CudaBackend& backend, KvCache& cache,
                                                        const SampleParams& sampling, int max_steps, GraphMode graphs);
  ~CudaDecodeLoop();

  // Samples the first token of every sequence from prefill logits [B, V] and loads the lengths
  // (cache.lengths) to the device; then runs one eager step (warm-up: lazily sized buffers get
  // their final size) and captures the step when graphs are on. Counts as steps 0 and 1.
  Status start(View prefill_logits);
  // One decode step: a forward of the last sampled ids, sampling, lengths += 1.
  Status step();
  // Rewinds the device lengths and the step counter to what they were after start(), so the
  // same positions are decoded again (benchmark repeats; the KV rows are overwritten).
  Status rewind();
  // Ids chosen so far: [B][steps taken + 1] (the prefill's sample first).
  Result<std::vector<std::vector<int32_t>>> tokens();
  bool uses_graph() const { return graph_.valid(); }
  const std::string& graph_error() const { return graph_error_; }  // why capture failed (empty: it did not)
  int steps_taken() const { return steps_; }

 private:
  CudaDecodeLoop(Model& model, CudaBackend& backend, KvCache& cache) : model_(model), be_(backend), cache_(cache) {}
  Status enqueue_step();  // queues forward + sample + advance (no host synchronisation)
  Status capture();

  Model& model_;
  CudaBackend& be_;
  KvCache& cache_;
  SampleParams sampling_;
  GraphMode mode_ = GraphMode::kOn;
  int batch_ = 0, max_steps_ = 0, steps_ = 0;
  std::vector<int32_t> start_lengths_;  // host lengths after start()
  Tensor ids_, past_, step_, history_;  // [B], [B], [1], [B, max_steps + 2] i32 device
  std::vector<int32_t> dummy_ids_;      // host ids for Model::forward's checks (the device ids are used)
  CudaGraph graph_;
  std::string graph_error_;
};

}  // namespace compactor

#endif  // COMPACTOR_HAS_CUDA
