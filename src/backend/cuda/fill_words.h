// Random 32-bit words on the GPU: word i of stream s is the low half of SplitMix64(SplitMix64(s) ^ i),
// the same draw as fill_words_host in model/synthetic.cpp. Every bit pattern is a valid packed code
// word for every intN format (formats/quant_pack.h), so synthetic quantized models (bench --quant)
// fill their qweight tensors with this and never materialise dense weights.
// A plain C++ header (no CUDA types) so model/bench/tools code can call it.
// Test: build-*/tests/test_cuda_synthetic_quant (on a GPU machine).
#pragma once

#include <cstdint>

#include "core/status.h"
#include "core/tensor.h"

struct CUstream_st;

namespace compactor {

// out: any 4-byte dtype (i32/u32/f32) on the CUDA device, contiguous; stream: the backend's stream.
Status fill_random_words_cuda(View out, uint64_t stream_id, CUstream_st* stream);

}  // namespace compactor
