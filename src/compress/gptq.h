// GPTQ (Frantar et al. 2022): the quantization policy of the OBS sweep (obs_solver.h) with the
// options of the reference implementation and AutoGPTQ: group size (or per-channel), act-order
// (desc_act; groups then follow the sweep order and g_idx maps each input column to its group),
// static groups (group parameters fixed from the unmodified weights in natural column order, so
// act-order needs no g_idx), symmetric/asymmetric grids, damping, block size.
// Test: build-comp/tests/test_quantizers (GPTQ error ≤ RTN error on correlated inputs, every case).
#pragma once

#include <string>
#include <vector>

#include "compress/obs_solver.h"
#include "core/status.h"
#include "formats/quant.h"

namespace compactor {

struct GptqOptions {
  QuantSpec spec;
  float percdamp = 0.01f;
  int block_size = 128;
  bool act_order = false;
  bool static_groups = false;
};

struct GptqResult {
  QuantizedLinear q;  // g_idx filled for act-order with dynamic groups
  ObsStats stats;
};

// w: [N, K] f32 weights; h: [K, K] f32 GPTQ Hessian (2/n XᵀX). Errors (named with `module`): a bad
// spec (check_quant_spec), a Hessian that cannot be factored.
Result<GptqResult> gptq_quantize(const float* w, int64_t out_features, int64_t in_features, std::vector<float> h,
                                 const GptqOptions& opts, const std::string& module);

}  // namespace compactor
