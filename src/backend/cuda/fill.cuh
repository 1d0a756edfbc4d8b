// Random fill on the GPU: N(mean, stddev²) from a counter-based generator (SplitMix64 of the
// element index keyed by a stream id, Box-Muller), the same draw as fill_normal_host in
// model/synthetic.cpp, so synthetic weights cost no host work and no transfer.
// Test: build-cuda/tests/test_cuda_ops --gtest_filter='*FillNormal*' (on a GPU machine).
#pragma once

#include "backend/cuda/common.cuh"

namespace compactor {

// out: [n] f32|f16|bf16 device
Status fill_normal_cuda(View out, uint64_t stream_id, float mean, float stddev, cudaStream_t stream);

}  // namespace compactor
