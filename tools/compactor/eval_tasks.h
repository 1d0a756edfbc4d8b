// The task runners of `compactor eval` (cmd_eval.cpp parses flags and prints): perplexity,
// KL divergence to a base (a model or saved top-k logits), and multiple-choice tasks from YAML task
// files, each returning its JSON entry and its run-record metrics.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common.h"
#include "eval/kl_divergence.h"
#include "eval/task_spec.h"

namespace compactor::cli {

struct EvalOptions {
  std::string model;
  std::vector<std::string> tasks{"ppl"};
  std::vector<std::string> task_files;
  std::string task_dir, data_dir;
  std::string data = "wikitext2";
  int ctx = 512, stride = 0, batch = 0;
  int64_t limit_windows = 0;
  bool no_bos = false;
  // multiple choice
  int64_t limit = 0;
  int shots = -1;
  int64_t seed = -1;          // -1: not given (first-N subsets, seed 1234 for shots and bootstrap)
  int bootstrap = 1000;
  bool skip_bad = false, add_bos = false;
  int64_t batch_tokens = 4096;
  // base model / KL
  std::string base;           // model directory, or a saved-logits file (kld only)
  std::string save_logits;
  int logits_topk = 32;
  CommonOptions common;
};

struct TaskResult {
  nlohmann::json json;
  std::vector<Metric> metrics;
};

// The base of comparisons: a loaded model, or saved logits, or nothing.
struct BaseSource {
  LoadedModel* model = nullptr;
  const BaseLogits* saved = nullptr;
  std::string path;
};

Result<TaskResult> run_ppl(LoadedModel& lm, const EvalOptions& o, const std::string& dataset);
Result<TaskResult> run_kld(LoadedModel& lm, const BaseSource& base, const EvalOptions& o, const std::string& dataset);
Result<TaskResult> run_mc_task(LoadedModel& lm, LoadedModel* base, const TaskSpec& spec, const EvalOptions& o);

// configs/tasks: --task-dir, else $COMPACTOR_TASKS, else ./configs/tasks, else the source tree's.
std::filesystem::path task_dir(const EvalOptions& o);
// ../shared/data unless --data-dir.
std::filesystem::path data_dir(const EvalOptions& o);
// Size and storage of the weights (parameters, bytes, bits per parameter, dtypes) and any
// quantization/compression metadata of config.json: lets reports join quality with bits.
nlohmann::json model_metadata(const LoadedModel& lm);

}  // namespace compactor::cli
