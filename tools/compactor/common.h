// Shared plumbing of the compactor subcommands: options every measuring command takes, model
// loading on a backend, run records, and error reporting.
#pragma once

#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "backend/backend.h"
#include "exp/run_record.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace compactor::cli {

struct Command {
  CLI::App* app = nullptr;
  std::function<int()> run;
};

struct CommonOptions {
  std::string device = "cpu";
  bool json = false;
  std::string store = "runs.db";
  std::string record_dir;   // also write the run record JSON here
  bool no_record = false;
  int threads = 0;
  bool quiet = false;
};

// --device --json --store --record-dir --no-record --threads --quiet
void add_common_options(CLI::App* app, CommonOptions& o);
void add_output_options(CLI::App* app, CommonOptions& o);  // --json --quiet only

struct LoadedModel {
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tokenizer;
};
Result<LoadedModel> load_model(const std::string& dir, const CommonOptions& o);

// Bytes of every regular file below `dir` (0 where it cannot be read).
int64_t directory_bytes(const std::filesystem::path& dir);

// WikiText-style perplexity of a loaded model on each named dataset (resolve_dataset), as the
// commands record it: {dataset: {data, path, ppl, mean_nll, windows, tokens, ctx}}.
Result<nlohmann::json> perplexity_records(LoadedModel& lm, const std::vector<std::string>& datasets, int ctx,
                                          int64_t limit_windows, bool quiet);

// Fills model path/hash, args, metrics-independent fields, then writes the record JSON (when
// --record-dir is set) and appends it to the run store (unless --no-record).
Status save_record(RunRecord& record, const CommonOptions& o, const std::string& model_dir, const CLI::App& app);

int fail(const Status& status);  // prints "compactor: error: ..." and returns 1
void apply_threads(int threads);

Command make_info_command(CLI::App& root);
Command make_tokenize_command(CLI::App& root);
Command make_generate_command(CLI::App& root);
Command make_eval_command(CLI::App& root);
Command make_bench_command(CLI::App& root);
Command make_runs_command(CLI::App& root);
Command make_quantize_command(CLI::App& root);

}  // namespace compactor::cli
