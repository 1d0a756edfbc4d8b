// Autoregressive generation for one prompt: prefill, then one token per step until max_tokens or
// an end-of-sequence id; each new id is handed to `on_token` as soon as it is chosen (streaming).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "model/model.h"
#include "model/sampler.h"

namespace compactor {

enum class StopAtEos { kYes, kNo };

struct GenerateOptions {
  int max_tokens = 64;
  SamplingParams sampling;
  StopAtEos stop_at_eos = StopAtEos::kYes;
  std::vector<int32_t> eos_ids;
};

struct GenerateResult {
  std::vector<int32_t> ids;       // generated ids (without the prompt)
  std::string stop_reason;        // "eos" | "max_tokens" | "context"
  double prefill_seconds = 0, decode_seconds = 0;
};

Result<GenerateResult> generate(Model& model, const std::vector<int32_t>& prompt, const GenerateOptions& opts,
                                const std::function<void(int32_t)>& on_token = {});

}  // namespace compactor
