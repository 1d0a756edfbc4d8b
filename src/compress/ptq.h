// Weight-only post-training quantization of a whole model: RTN, GPTQ or AWQ over the linears of
// every block (q, k, v, o, gate, up, down; lm_head only when a rule asks), through the layer-by-
// layer driver (layerwise.h) when a calibration set is given. The model is modified in place:
// each quantized linear is replaced by its dequantized dense f32 weights (so the next block's
// calibration inputs and any evaluation see the quantized model), AWQ's scales are folded into the
// norms / preceding linears; the integer codes (formats/quant.h) are returned for packing.
//
//   RTN  round-to-nearest; with calibration, its output error is measured per linear too.
//   GPTQ gptq.h per linear group, true-sequential inside a block (each group's inputs are captured
//        after the previous groups were quantized) unless `true_sequential` is off.
//   AWQ  awq.h: per group scale search on the block's float activations, folded into the preceding
//        RMSNorm (q/k/v, gate/up) or linear (v→o when shapes allow, up→down), then the clipping
//        search (not for q/k, like llm-awq), then RTN.
// Every quantized linear reports ‖WX − ŴX‖² / ‖WX‖² on its calibration inputs and, for comparison,
// RTN's error on the same inputs.
// On the CUDA backend the block forwards, the statistics (XᵀX on the GPU), GPTQ's solver, RTN and the
// error measurement run on the GPU (gptq_cuda.h; quantized weights are written back in place) and
// only codes, scales and zeros come to the host; AWQ's scale and clip searches stay on the host.
// Test: build-comp/tests/test_ptq_driver, test_ptq_quality (tests/models/); GPU: test_cuda_gptq.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "compress/awq.h"
#include "compress/calibration.h"
#include "compress/module_rules.h"
#include "formats/quant.h"
#include "model/model.h"

namespace compactor {

enum class PtqMethod { kRtn, kGptq, kAwq };
Result<PtqMethod> ptq_method_from_name(const std::string& name);  // rtn | gptq | awq
const char* ptq_method_name(PtqMethod m);

struct PtqOptions {
  PtqMethod method = PtqMethod::kGptq;
  QuantSpec spec;                 // default for every linear
  std::vector<ModuleRule> rules;  // per-module overrides (mixed precision)
  // GPTQ
  bool act_order = false;
  bool static_groups = false;
  bool true_sequential = true;
  float percdamp = 0.01f;
  int block_size = 128;
  // AWQ
  AwqOptions awq;
  bool awq_clip = true;
  bool awq_fold_only = false;     // search and fold the scales, quantize nothing (analysis, tests)
  // Driver
  int64_t batch_tokens = 0;       // tokens per block forward; 0: 8192 on the GPU, 2048 on the CPU
  bool quiet = false;             // no per-layer lines on stderr
};

struct LinearReport {
  std::string module;             // HF name, e.g. model.layers.0.self_attn.q_proj
  int layer = 0;                  // -1 for lm_head
  std::string linear;             // q, k, v, o, gate, up, down, lm_head
  QuantSpec spec;
  bool act_order = false;         // g_idx stored
  int64_t out_features = 0, in_features = 0;
  double rel_error = -1;          // ‖WX − ŴX‖² / ‖WX‖² on calibration inputs; -1 without calibration
  double rtn_rel_error = -1;      // RTN's, same inputs and weights
  double seconds = 0;
  int64_t dead_columns = 0;
  int damp_retries = 0;
  float awq_alpha = -1;           // AWQ: chosen exponent of the group
  double bits_per_weight = 0;     // storage, scales and zeros included
};

struct PtqResult {
  std::map<std::string, QuantizedLinear> quantized;  // HF module name -> codes, scales, zeros, g_idx
  std::vector<LinearReport> linears;
  std::vector<double> layer_seconds;                 // per block
  // HF tensor names whose dense values changed without being quantized (AWQ folds into norms and
  // into linears kept in 16 bits): the saver must write the model's current values for them.
  std::vector<std::string> modified_dense;
  double seconds = 0;
  // Phases (seconds, synchronised): block forwards, statistics, solver (GPTQ's damping + Cholesky,
  // sweep, codes to the host; RTN's rounding), error measurement, weights written back to the model.
  struct Phases {
    double embed = 0, forward = 0, stats = 0, factor = 0, sweep = 0, measure = 0, write_back = 0;
  } phases;
  bool on_gpu = false;                               // the statistics and solvers ran on the GPU
  int64_t quantized_weights = 0;                     // elements of quantized linears
  double quantized_bits = 0;                         // their storage bits (scales, zeros included)
};

// Quantizes `model` in place. `calib` may be null for RTN (then no errors are measured); GPTQ and
// AWQ need it. Errors name the module and the problem (bad spec for its width, unsupported bits,
// an unfactorable Hessian) — the model may then be partly modified.
Result<PtqResult> quantize_model(Model& model, const CalibrationSet* calib, const PtqOptions& opts);

// The HF module name of linear `name` ("q" .. "down") in `layer` ("lm_head" for layer -1).
std::string linear_module_name(const Model& model, int layer, const std::string& name);

// Model-level storage: bits per parameter over all parameters (embeddings, norms and unquantized
// linears at their checkpoint dtype's width, quantized linears at their storage bits).
double model_bits_per_weight(const Model& model, const PtqResult& r);

}  // namespace compactor
