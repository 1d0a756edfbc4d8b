// Synthetic models for speed measurements: the exact shapes of well-known architectures
// (config.json values of the public checkpoints) with random weights made on the model's backend,
// so prefill/decode speed can be measured without downloading weights (VERIFY.md: "real weights
// are not needed for speed"). Values are N(0, 0.02²) like initialised HF linears, norms are 1,
// so activations stay finite through every layer.
// Quantized synthetic models (bench --quant w4g128 ...): every block linear (q, k, v, o, gate, up,
// down) is allocated directly in the packed intN storage of formats/quant_pack.h (no dense copy
// ever exists): random 32-bit code words (every bit pattern is valid for every width), zero points
// drawn around the middle of the code range and f16 scales N(s0, (s0/10)²), or (symmetric) zero
// points 2^(bits-1) and scales N(0, s0²), with s0 (synthetic_scale) chosen so the dequantized
// weights have mean 0 and std 0.02 like the dense ones. Embeddings and norms stay dense; lm_head
// too unless SyntheticQuant::lm_head.
// `--quant nf4` (formats/nf4.h, block 64): random code words, E4M3 scale codes of random sign around
// 256 with nested scales a0/256 and offset 0, a0 chosen so the dequantized weights have std 0.02.
// Test: build-*/tests/test_cuda_model --gtest_filter='*Synthetic*' (GPU), test_synthetic_model (CPU).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "formats/format.h"
#include "model/model.h"
#include "model/quant_config.h"

namespace compactor {

// "llama2-7b" | "llama3-8b" | "mistral-7b" | "llama2-13b" (and "tiny", a 2-layer toy for tests).
std::vector<std::string> synthetic_model_names();
Result<ModelConfig> synthetic_config(std::string_view name);

// Fills `out` (any float dtype, on the model's backend) with N(mean, stddev²) values drawn from a
// counter-based generator keyed by `stream` (one stream per tensor).
using WeightFill = std::function<void(View out, uint64_t stream, float mean, float stddev)>;

// The host fallback: draws on the host and copies to the backend (slow for 7B models; the CUDA
// backend fills on the device, CudaBackend::fill_normal).
void fill_normal_host(Backend& backend, View out, uint64_t stream, float mean, float stddev);

// Fills `out` (4-byte dtype, on the model's backend) with random 32-bit words keyed by `stream`.
using WordFill = std::function<void(View out, uint64_t stream)>;

// The host fallback of WordFill (CUDA: fill_random_words_cuda, backend/cuda/fill_words.h); word i
// is the low half of SplitMix64(SplitMix64(stream) ^ i) on both.
void fill_words_host(Backend& backend, View out, uint64_t stream);

// The weight format of a synthetic quantized model.
struct SyntheticQuant {
  std::string preset;  // kQuantPresets name, e.g. "w4g128", or "nf4"
  Format format = Format::kInt4;
  QuantSpec spec;      // bits, group_size (0 = per-channel), symmetric
  bool act_order = false;  // g_idx: a random permutation of the inputs cut into groups of group_size
  bool lm_head = false;    // also pack lm_head (untied models only)

  // "int4 g128 asym" (+ " act-order")
  std::string format_label() const;
  // "int4 g128 asym: q,k,v,o,gate,up,down (224 linears); dense bf16: embeddings, lm_head"
  std::string describe(const ModelConfig& config, DType dense_dtype) const;
};

// --quant PRESET [--sym] [--act-order] [--quant-lm-head]; errors name the flag and list the presets.
// "nf4" gives Format::kNF4 with spec {4, 64, false} (no --sym / --act-order).
Result<SyntheticQuant> synthetic_quant(std::string_view preset, bool symmetric, bool act_order, bool lm_head);

// The quantization_config of such a model: every block linear (and lm_head when asked) by its HF
// module name, for Model::allocate.
Result<QuantizationConfig> synthetic_quantization_config(const ModelConfig& config, const SyntheticQuant& quant);

// The scale around which synthetic scales are drawn: dequantized weights (c - z) * s with uniform
// codes c and the zero points fill_synthetic_weights draws have standard deviation 0.02.
float synthetic_scale(const QuantSpec& spec);

// Fills every weight of `model`: dense linears and embeddings N(0, 0.02²), norm weights 1, biases
// 0; packed linears as described above (fill_words: qweight; fill: scales; zero points and g_idx
// are made on the host and copied, they are small). fill_words may be empty for a dense model.
void fill_synthetic_weights(Model& model, uint64_t seed, const WeightFill& fill, const WordFill& fill_words = {});

// Model::allocate + fill_synthetic_weights: dense when `quant` is nullptr.
Result<std::unique_ptr<Model>> make_synthetic_model(const ModelConfig& config, Backend& backend,
                                                    const SyntheticQuant* quant, uint64_t seed, const WeightFill& fill,
                                                    const WordFill& fill_words);

// Bytes of every weight the model holds on its backend (what decode reads per step, plus the
// embedding table of which it reads B rows); packed linears count qweight + scales + qzeros (+ g_idx)
// (NF4: qweight + scales + nested_scales + nested_offset).
int64_t model_weight_bytes(const Model& model);
// The packed part of that (0 for a dense model).
int64_t model_quantized_bytes(const Model& model);

}  // namespace compactor
