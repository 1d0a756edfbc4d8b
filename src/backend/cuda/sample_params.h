// Sampling parameters of the GPU sampler (sample.cuh), in a header without CUDA includes so the
// bench layer and the CLI can name them. Test: build-cuda/tests/test_cuda_ops --gtest_filter='*Sample*'.
#pragma once

#include <cstdint>

namespace compactor {

struct SampleParams {
  float temperature = 0.f;  // 0: greedy
  int top_k = 0;            // 0: no top-k filter
  float top_p = 1.f;        // 1: no nucleus filter
  uint64_t seed = 0;
};

}  // namespace compactor
