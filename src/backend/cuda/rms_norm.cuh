// RMSNorm on the GPU: out = x / sqrt(mean(x²) + eps) * weight, f32 math, one rounding at the end.
// Test: build-cuda/tests/test_cuda_ops --gtest_filter='*RmsNorm*' (on a GPU machine).
#pragma once

#include <initializer_list>

#include "backend/cuda/common.cuh"

namespace compactor {

// out: [T, D] act; x: [T, D] act (may alias out); weight: [D] f32|f16|bf16
Status rms_norm_cuda(View out, View x, View weight, float eps, cudaStream_t stream);

// Shared by rms_norm and add_rms_norm: checks weight: [D] of a float dtype on the device.
Status check_norm_weight(const char* op, View weight, int64_t dim);

// Threads per row for a hidden size (a multiple of 32).
int norm_threads(int64_t dim);

// The 16-byte kernels' limits: rows of D % 8 == 0 elements at 16-byte aligned addresses, each of
// at most 1024 threads holding kNormChunks 8-element vectors.
constexpr int kNormChunks = 4;
bool norm_vec_ok(int64_t dim, std::initializer_list<const void*> ptrs);
int norm_vec_threads(int64_t dim);

}  // namespace compactor
