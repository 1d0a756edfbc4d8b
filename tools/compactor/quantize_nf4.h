// `compactor quantize MODEL OUT --method nf4 [--group B]`: data-free NF4 with double-quantized
// scales (formats/nf4.h, QLoRA's base format). Every block linear is quantized (lm_head only when an
// --override names it: `lm_head=nf4`; `PATTERN=keep|fp16|bf16|16|none` keeps a module dense); the
// per-linear report is the weight-space error ‖W − Ŵ‖² / ‖W‖² (no calibration). --eval measures
// perplexity of OUT as saved and reloaded (so the NF4 matmul path is what is measured).
// Test: tests/cli/test_cli_quantize.cpp.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "common.h"

namespace compactor::cli {

// What every `quantize` method takes: the model, the output, per-module overrides, the perplexity
// measured after (and before), and the common flags.
struct QuantizeRunOptions {
  std::string model, out;
  std::vector<std::string> overrides;
  std::vector<std::string> eval;
  bool eval_base = false;
  int eval_ctx = 512;
  int64_t limit_windows = 0;
  bool overwrite = false, no_save = false;
  CommonOptions common;
};

struct NF4QuantizeOptions : QuantizeRunOptions {
  int block = 64;
};

int run_quantize_nf4(const NF4QuantizeOptions& o, const CLI::App& app);

}  // namespace compactor::cli
