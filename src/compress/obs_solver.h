// The Optimal Brain Surgeon column sweep shared by GPTQ (Frantar et al. 2022, "GPTQ: Accurate
// Post-Training Quantization for Generative Pre-trained Transformers") and SparseGPT (Frantar &
// Alistarh 2023): IST-DASLab gptq.py::fasterquant / sparsegpt.py::fasterprune share this skeleton,
// only the per-column decision (quantize / prune) differs, so it is a policy here.
//
//   H = 2/n XᵀX; dead inputs (H_ii = 0): H_ii = 1 and the column's weights set to 0
//   act-order: columns visited by decreasing H_ii
//   H += percdamp · mean(diag H) · I (×10 again while Cholesky fails)
//   U = chol(H⁻¹) upper (LAPACKE spotrf / spotri / spotrf)
//   per block of B columns: for each column j: q_j = decide(w_j); e_j = (w_j − q_j) / U_jj;
//     w_{j+1..B} −= e_j U_{j, j+1..B}          (inside the block)
//   then the lazy batch update of all later columns: W_{rest} −= E · U_{block, rest} (OpenBLAS sgemm)
//
// Weights are swept transposed ([K, N]: a column of W is a contiguous row) so the per-column
// updates are contiguous axpys. Test: build-comp/tests/test_quantizers.
#pragma once

#include <cstdint>
#include <vector>

#include "core/status.h"

namespace compactor {

// The per-column decision. Positions are in sweep order; perm[pos] is the original input column.
class ObsColumnPolicy {
 public:
  virtual ~ObsColumnPolicy() = default;
  // Called before each block of columns [pos, pos + count). wt: [K, N] the current weights in sweep
  // order (rows before pos are decided, rows from pos on carry the error feedback so far).
  virtual void begin_block(int64_t pos, int64_t count, const float* wt) {}
  // Replaces column `pos` (w: [N], its current weights) by the decided values, in place.
  // wt as in begin_block (row pos is w itself).
  virtual void decide(int64_t pos, float* w, const float* wt) = 0;
};

struct ObsOptions {
  float percdamp = 0.01f;   // damping, fraction of mean(diag H)
  int block_size = 128;     // columns per lazy batch update
  bool act_order = false;   // sweep columns by decreasing H_ii (GPTQ desc_act)
};

struct ObsStats {
  int64_t dead_columns = 0;  // inputs never active in the calibration set
  float damp = 0.f;          // damping actually added (absolute)
  int damp_retries = 0;      // times the damping was raised because Cholesky failed
};

// Sweep order for a Hessian: identity, or by decreasing diagonal (stable) with act-order.
std::vector<int32_t> obs_column_order(const std::vector<float>& h, int64_t in_features, bool act_order);

// Runs the sweep. w: [N, K] f32, replaced by the decided weights (original column order).
// h: [K, K] f32 GPTQ Hessian (taken by value: it is modified). perm: the sweep order
// (obs_column_order), also what the policy sees. Errors: a Hessian that stays indefinite after
// raising the damping 6 times (NaN/Inf inputs), named with `module`.
Result<ObsStats> obs_sweep(float* w, int64_t out_features, int64_t in_features, std::vector<float> h,
                           const std::vector<int32_t>& perm, const ObsOptions& opts, ObsColumnPolicy& policy,
                           const std::string& module);

}  // namespace compactor
