// From a task file (task_spec.h) and its data to the items to score, with lm-evaluation-harness's
// prompt construction:
//   prompt = description + Σ_shots (context(shot) + target_delimiter + choice(shot)[gold] + delimiter)
//            + context(doc)
//   continuation_i = target_delimiter + choice(doc)[i]
// `--limit N` keeps N items per group (the first N, or a random subset when a subset seed is set),
// as lm-eval applies its limit to each MMLU subject. Few-shot examples come from the task's pool
// (first-N or seeded random per item; never the item itself when the pool is the dataset).
// A bad row (missing field, gold out of range, empty choice, unreadable line) is an error naming
// FILE:LINE, or a counted skip when `skip_bad` is set; an empty task and a few-shot request larger
// than the pool are always errors.
// Test: build-*/tests/test_task_spec (prompt strings of every shipped task), test_task_data.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "core/status.h"
#include "eval/task_spec.h"

namespace compactor {

struct McItem {
  std::string location;  // "FILE:LINE" of the row
  std::string group;     // the group (MMLU subject), "" for single-file tasks
  std::string context;   // the whole prompt before the continuation
  std::vector<std::string> continuations;  // target_delimiter + choice text, one per choice
  std::vector<int64_t> choice_bytes;       // UTF-8 bytes of each choice text (acc_norm's divisor)
  int gold = -1;                           // gold choice; -1 when a mask gold has several true answers
  std::vector<uint8_t> gold_mask;          // mask golds: 1 for true answers (mc2); else empty
};

// One row's own parts, before shots are added.
struct RenderedRow {
  std::string description, context;
  std::vector<std::string> choices;  // rendered choice texts (without the delimiter)
  int gold = -1;
  std::vector<uint8_t> gold_mask;
};
// Errors name what is wrong in the row; the caller prefixes the row's location.
Result<RenderedRow> render_row(const TaskSpec& spec, const Doc& doc);

struct TaskBuildOptions {
  std::filesystem::path data_dir;      // relative data paths resolve here
  int shots = -1;                      // -1: the task's fewshot.count
  int64_t limit = 0;                   // items per group; 0: all
  std::optional<uint64_t> subset_seed; // with limit: a seeded random subset instead of the first N
  uint64_t fewshot_seed = 1234;        // random few-shot sampler
  bool skip_bad = false;
};

struct TaskGroup {
  std::string name;        // "" for a single-file task
  std::string file;        // the data file
  int64_t rows = 0;        // valid rows in the file (before --limit)
  int64_t first_item = 0;  // items [first_item, first_item + items) belong to the group
  int64_t items = 0;
};

struct TaskInstance {
  std::string name, split;
  int shots = 0;
  std::vector<TaskGroup> groups;
  std::vector<McItem> items;
  std::vector<std::string> skipped;  // "FILE:LINE: reason" of bad rows skipped (skip_bad)
};

Result<TaskInstance> build_task(const TaskSpec& spec, const TaskBuildOptions& opts);

// The files a data path names: one file, or one per value of its {name} placeholder (sorted).
struct DataFile {
  std::string group;
  std::filesystem::path path;
};
Result<std::vector<DataFile>> expand_data_path(const std::string& path, const std::filesystem::path& data_dir);

}  // namespace compactor
