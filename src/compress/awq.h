// AWQ (Lin et al. 2024, "AWQ: Activation-aware Weight Quantization for LLM Compression and
// Acceleration"; reference: mit-han-lab/llm-awq auto_scale.py/auto_clip.py, AutoAWQ): the math of
// its two searches, on one group of linears that share an input X.
//  - Scale search: s = mean|x|^α (normalised by sqrt(max·min)), α on a grid of `grid` points in
//    [0, 1); the loss of a candidate is the group's output error Σ ‖X·Wᵀ − X·(Q(W·diag s)·diag s⁻¹)ᵀ‖²
//    with Q = round-to-nearest, computed from the Gram matrix XᵀX (hessian.h), so α = 0 (RTN itself)
//    is always a candidate. The caller folds 1/s into whatever produces X (the preceding RMSNorm
//    weight, or the output rows of the preceding linear) and s into the group's input columns.
//  - Clipping search: per output row and group, the largest |w| kept is shrunk over a grid down to
//    (1 − max_shrink)·max|w|, minimising that group's share of the output error (the block-diagonal
//    of XᵀX, like auto_clip's per-group partial products).
// Test: build-comp/tests/test_quantizers (folding is exact; AWQ ≤ RTN on its loss).
#pragma once

#include <cstdint>
#include <vector>

#include "formats/quant.h"

namespace compactor {

struct AwqOptions {
  int grid = 20;            // α candidates i / grid, i = 0 .. grid-1
  int clip_grid = 20;       // shrink steps of 1/clip_grid
  float max_shrink = 0.5f;  // smallest kept range: (1 - max_shrink) · max|w|
  // AutoAWQ's duo scaling: s = mean|x|^α / mean(|w| / max|w| per group)^(1-α).
  bool duo_scaling = false;
};

// One linear of a group: weights [N, K] f32 (host) and its quantization spec.
struct AwqLinear {
  const float* w = nullptr;
  int64_t out_features = 0;
  QuantSpec spec;
};

struct AwqScaleResult {
  std::vector<float> scales;  // [K]; all 1 when α = 0 wins
  float alpha = 0.f;
  double loss = 0, rtn_loss = 0;  // group output error at the chosen α and at α = 0
};

// mean_abs: [K] mean |x| per input channel; gram: [K, K] XᵀX.
AwqScaleResult awq_search_scales(const std::vector<AwqLinear>& group, int64_t in_features,
                                 const std::vector<float>& mean_abs, const std::vector<float>& gram,
                                 const AwqOptions& opts);

// Shrinks each (row, group) range of w: [N, K] f32 in place to the clip that minimises the group's
// output error under `spec`. Returns the summed per-group error after clipping (before: ratio 1).
double awq_clip(float* w, int64_t out_features, int64_t in_features, const QuantSpec& spec,
                const std::vector<float>& gram, const AwqOptions& opts);

// Folding primitives. w: [N, K] f32.
void scale_columns(float* w, int64_t out_features, int64_t in_features, const std::vector<float>& s);  // w[:, k] *= s[k]
void divide_rows(float* w, int64_t out_features, int64_t in_features, const std::vector<float>& s);    // w[n, :] /= s[n]
void divide_elements(float* v, const std::vector<float>& s);                                           // v[i] /= s[i]
// The Gram matrix of X·diag(s)⁻¹: g[i, j] / (s[i] s[j]). g: [K, K].
void scale_gram(std::vector<float>& g, const std::vector<float>& s);

}  // namespace compactor
