// Next-token sampling on the GPU, so a decode loop never copies logits to the host: greedy
// argmax (temperature 0; ties to the lowest id, like std::max_element), or temperature sampling
// with optional top-k and top-p (nucleus) filters and a seeded counter-based draw keyed by
// (seed, step, row). The filters are thresholds found by bisection on the order-preserving
// integer image of the scaled logits (exact k-th largest value; smallest top set whose mass
// reaches top_p), so equal logits at the threshold are all kept; the CPU Sampler (model/sampler.h)
// is the reference for the distribution, not for the random stream.
// Test: build-cuda/tests/test_cuda_ops --gtest_filter='*Sample*' (on a GPU machine).
#pragma once

#include <cstdint>

#include "backend/cuda/common.cuh"
#include "backend/cuda/sample_params.h"

namespace compactor {

// ids: [B] i32 device (written); logits: [B, V] act. step: [1] i32 device, the draw counter (nullptr:
// step 0). history: [B, history_stride] i32 device or nullptr; when set, ids[b] is also written to
// history[b * history_stride + *step] if *step < history_stride.
Status sample_cuda(int32_t* ids, View logits, const SampleParams& p, const int32_t* step, int32_t* history,
                   int64_t history_stride, cudaStream_t stream);

// The end of a decode step on the device: past[b] += 1 for b < batch, and *step += 1 (nullable).
Status decode_advance_cuda(int32_t* past, int batch, int32_t* step, cudaStream_t stream);

}  // namespace compactor
