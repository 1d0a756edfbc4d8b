// The KV cache of a batch of sequences: per layer, keys and values [B, S_max, Hkv*Dh] on the
// model's backend, plus each sequence's current length (host).
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace compactor {

struct KvCache {
  int batch = 0;      // B
  int capacity = 0;   // S_max tokens per sequence
  std::vector<Tensor> k, v;       // per layer: [B, S_max, Hkv*Dh]
  std::vector<int32_t> lengths;   // [B] tokens stored per sequence

  void reset() { std::fill(lengths.begin(), lengths.end(), 0); }
  int64_t bytes() const {
    int64_t b = 0;
    for (const auto& t : k) b += t.bytes();
    for (const auto& t : v) b += t.bytes();
    return b;
  }
};

}  // namespace compactor
