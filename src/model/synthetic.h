// Synthetic models for speed measurements: the exact shapes of well-known architectures
// (config.json values of the public checkpoints) with random weights made on the model's backend,
// so prefill/decode speed can be measured without downloading weights (VERIFY.md: "real weights
// are not needed for speed"). Values are N(0, 0.02²) like initialised HF linears, norms are 1,
// so activations stay finite through every layer.
// Test: build-*/tests/test_cuda_model --gtest_filter='*Synthetic*' (GPU), test_synthetic_model (CPU).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "model/model.h"

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

// Fills every weight of `model`: linears and embeddings N(0, 0.02²), norm weights 1, biases 0.
void fill_synthetic_weights(Model& model, uint64_t seed, const WeightFill& fill);

// Bytes of every weight the model holds on its backend (what decode reads per step, plus the
// embedding table of which it reads B rows).
int64_t model_weight_bytes(const Model& model);

}  // namespace compactor
