// A trivial round-to-nearest quantizer for tests of the packed formats and compressed directories
// (the real compressors live in src/compress; tests of formats must not depend on them).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "formats/quant.h"
#include "model/model.h"

namespace compactor::test {

struct RtnSpec {
  QuantSpec spec;
  bool act_order = false;  // a seeded random permutation of the groups' members (g_idx)
};

// Round-to-nearest of w: [N, K] f32 per group (range including 0, as GPTQ's quantizer); scales
// rounded to f16 first, so the packed weights dequantize to exactly these values.
QuantizedLinear rtn_quantize(const std::vector<float>& w, int64_t n, int64_t k, const RtnSpec& r, uint32_t seed);

// A random valid QuantizedLinear (seeded): uniform codes, f16-exact scales uniform in
// [1e-3, max_scale], integer zeros (2^(bits-1) when sym); act-order gives GPTQ-style g_idx (groups
// of group_size members, shuffled; needs group > 0).
QuantizedLinear random_quantized_linear(int bits, int group, bool sym, bool act_order, int64_t n, int64_t k,
                                        uint32_t seed, float max_scale = 0.2f);

// Every linear of `m` (plus "lm_head" when `lm_head`, also for tied models) with the spec `choose`
// picks for its HF module name.
std::map<std::string, QuantizedLinear> rtn_quantize_model(const Model& m,
                                                          const std::function<RtnSpec(const std::string&)>& choose,
                                                          bool lm_head);

}  // namespace compactor::test
