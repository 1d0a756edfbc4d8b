// The sequential calibration driver (DESIGN.md "Calibration driver"; CONVENTIONS.md 7): one
// driver for every architecture the model layer knows, no per-model code.
//
//   x = embed(calibration windows)                       [N·L, D] on the model's backend
//   for each block i:
//     compressor.compress_block(ctx)   -- ctx.collect(taps) runs block i over the calibration set
//                                         with the current weights and returns the statistics of
//                                         the named taps' activations (attn_norm = input of q/k/v,
//                                         attn_output of o, ffn_norm of gate/up, ffn_act of down)
//     x = block_i(x) with the compressed weights          (the next block's inputs)
//
// Memory holds the hidden states of the calibration set (two [N·L, D] buffers at most: inputs and
// a per-batch work copy), one layer's KV cache for a batch of windows, and the statistics the
// compressor asks for — never activations of more than one block.
// On the CUDA backend the statistics are accumulated on the GPU (InputStats::on_device) from the
// activations where the forward left them; the driver owns the GPU compressors' context (gpu()).
// Test: build-comp/tests/test_ptq_driver (tests/models/test_ptq_driver.cpp); GPU: test_cuda_gptq.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "compress/calibration.h"
#include "compress/gptq_cuda.h"
#include "compress/hessian.h"
#include "model/model.h"

namespace compactor {

class LayerwiseDriver;

// What a compressor sees of the current block.
class BlockContext {
 public:
  BlockContext(LayerwiseDriver& driver, int layer) : driver_(driver), layer_(layer) {}
  int layer() const { return layer_; }
  Model& model() const;
  // One pass of the block over the calibration set; statistics (XᵀX, mean |x|) of each named tap.
  Result<std::map<std::string, InputStats>> collect(const std::vector<std::string>& taps);
  // Rows of calibration activations seen per tap per pass (N·L).
  int64_t tokens() const;
  // The GPU compressors' context when the model is on the CUDA backend, else nullptr.
  CudaCompressContext* gpu() const;

 private:
  LayerwiseDriver& driver_;
  int layer_;
};

class BlockCompressor {
 public:
  virtual ~BlockCompressor() = default;
  // Compresses block ctx.layer() in place in the model (Model::replace_linear / replace_norm).
  virtual Status compress_block(BlockContext& ctx) = 0;
};

struct LayerwiseOptions {
  int64_t batch_tokens = 2048;  // tokens per block forward (whole windows, at least one)
  // Called after each block with its index and seconds (progress, per-layer timing).
  std::function<void(int layer, double seconds)> on_block;
};

// Where the driver's time went (seconds; GPU work is synchronised at each phase boundary).
struct LayerwiseTimes {
  double forward = 0;  // block forwards: the collect passes (up to their last tap) and the output pass
  double stats = 0;    // statistics accumulation (XᵀX, |x| sums) inside the collect passes
  double embed = 0;    // embedding the calibration windows
};

class LayerwiseDriver {
 public:
  LayerwiseDriver(Model& model, const CalibrationSet& calib, LayerwiseOptions opts);

  // Runs every block through `compressor`. After it, hidden() holds the last block's outputs.
  Status run(BlockCompressor& compressor);
  // The final hidden states [N·L, D] (act dtype, on the backend) after run().
  View hidden() const { return hidden_; }
  // One pass over the calibration set in batches: fn(rows view of `src` [b·L, D], batch layout, cache).
  Status for_each_batch(View src, const std::function<Status(View x, const BatchLayout&, KvCache&)>& fn);

  Model& model() const { return model_; }
  const CalibrationSet& calibration() const { return calib_; }
  Tensor& work() { return work_; }
  // CUDA backend: the context made at construction (nullptr on other backends or when it failed:
  // then gpu_status() says why and run() returns that error).
  CudaCompressContext* gpu() const { return gpu_.get(); }
  const std::shared_ptr<CudaCompressContext>& gpu_shared() const { return gpu_; }
  // New statistics of `width` input features, on the GPU when gpu() is set.
  Result<InputStats> new_stats(int64_t width) const;
  LayerwiseTimes& times() { return times_; }

 private:
  KvCache& cache_for(int batch);

  Model& model_;
  const CalibrationSet& calib_;
  LayerwiseOptions opts_;
  int batch_ = 1;
  Tensor hidden_, work_;
  std::map<int, KvCache> caches_;
  std::shared_ptr<CudaCompressContext> gpu_;
  Status gpu_status_;
  LayerwiseTimes times_;
};

// Host f32 rows of an activation view (no copy on the CPU backend with f32 activations).
const float* host_f32_rows(Backend& backend, View v, std::vector<float>& buffer);

}  // namespace compactor
