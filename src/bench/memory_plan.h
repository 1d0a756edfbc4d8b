// Device memory needed by a benchmark point, estimated before any work starts, so an oversized
// batch or context is a clear error instead of an out-of-memory abort half-way through:
//   weights + KV cache (B × context × layers × 2 × Hkv × Dh × bytes) + prefill activations
//   (the forward's scratch buffers for B × prompt rows) + logits + attention/cuBLAS workspaces.
// Quantized models: weights are the packed bytes (qweight + scales + qzeros + g_idx, quant_pack.h)
// plus what the CUDA backend adds at run time: the repacked copy of each packed linear that the
// fused GEMV reads (quant_repack.h sizes) and the dense scratch the prefill dequantizes into.
// Test: build-*/tests/test_bench_plan, test_synthetic_model (quantized estimates).
#pragma once

#include <cstdint>
#include <string>

#include "core/status.h"
#include "formats/quant.h"
#include "io/hf_config.h"

namespace compactor {

struct MemoryEstimate {
  int64_t weights = 0;
  int64_t kv_cache = 0;
  int64_t activations = 0;  // scratch of the largest forward (the prefill)
  int64_t logits = 0;
  int64_t workspace = 0;    // cuBLAS, attention split partials, sampling, margin
  int64_t total() const { return weights + kv_cache + activations + logits + workspace; }
  std::string describe() const;  // "13.5 GB weights + 10.7 GB KV cache + ..."
};

// Dense weights of `config` in `weight_bytes_per_element` (norms counted in f32).
int64_t estimate_weight_bytes(const ModelConfig& config, int weight_bytes_per_element);

// Weights of `config` with every block linear (and lm_head when `lm_head`, untied models) packed
// in `spec` (+ g_idx when act_order), the rest dense in `dense_bytes` per element, norms f32.
// Equals model_weight_bytes of the synthetic model of that format (model/synthetic.h).
int64_t estimate_quantized_weight_bytes(const ModelConfig& config, const QuantSpec& spec, bool act_order, bool lm_head,
                                        int dense_bytes);

// Device bytes the CUDA backend keeps for one packed [n, k] linear besides its packed tensors: the
// repacked copy of the fused kernels (int4: the tensor-core layout); 0 when the repack rejects
// the group size (that weight takes the dequantize path).
int64_t repacked_linear_bytes(int bits, int group_size, int64_t n, int64_t k, bool act_order);

// For a model of that format: every packed linear's repacked copy + the dequantize scratch (the
// largest packed linear, dense in `act_bytes`), which prefill matmuls above the GEMV sizes use.
int64_t estimate_quantized_runtime_bytes(const ModelConfig& config, const QuantSpec& spec, bool act_order, bool lm_head,
                                         int act_bytes);

// The same for a placed model: its packed linears' repacked copies + the dequantize scratch.
class Model;
int64_t quantized_runtime_bytes(const Model& model, int act_bytes);

// `weights` bytes already placed (or to be placed); batch sequences of `prompt` tokens prefilled
// at once, then decoded up to `context` tokens each; activations of `act_bytes` per element.
MemoryEstimate estimate_memory(const ModelConfig& config, int64_t weights, int act_bytes, int batch, int prompt,
                               int context);

// An out-of-memory error naming the point (`what`, e.g. "batch 32, context 640") and the
// estimate when the part not yet allocated exceeds `free_bytes`; `allocated` bytes of the
// estimate (e.g. the weights) are already on the device.
Status check_memory_fits(const MemoryEstimate& estimate, int64_t allocated, int64_t free_bytes, const std::string& what);

}  // namespace compactor
