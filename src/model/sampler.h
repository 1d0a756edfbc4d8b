// Next-token sampling on host logits: greedy (temperature 0), or temperature with optional top-k
// and top-p (nucleus) filtering, reproducible from a seed (std::mt19937_64).
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace compactor {

struct SamplingParams {
  float temperature = 0.0f;  // 0: greedy
  int top_k = 0;             // 0: no top-k filter
  float top_p = 1.0f;        // 1: no nucleus filter
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(SamplingParams p) : params_(p), rng_(p.seed) {}
  // logits: [V] f32
  int32_t sample(const float* logits, int64_t vocab);

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> candidates_;
};

int32_t argmax(const float* logits, int64_t vocab);

}  // namespace compactor
