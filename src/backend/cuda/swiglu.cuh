// SwiGLU gate on the GPU (Shazeer 2020): out = silu(gate) * up, f32 math, one rounding.
// Test: build-cuda/tests/test_cuda_ops --gtest_filter='*Swiglu*' (on a GPU machine).
#pragma once

#include "backend/cuda/common.cuh"

namespace compactor {

// out: [T, F] act (may alias gate or up); gate: [T, F] act; up: [T, F] act
Status swiglu_cuda(View out, View gate, View up, cudaStream_t stream);

}  // namespace compactor
