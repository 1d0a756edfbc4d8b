// Multiple-choice tasks defined as data: a YAML file in configs/tasks/ (the shape of
// lm-evaluation-harness's task configs, without Jinja) says where the rows are, how a row becomes a
// prompt, its choices, its gold answer, the few-shot pool and the metrics:
//
//   task: arc_easy                  # name used by --tasks
//   split: test                     # informative, copied to the results
//   dataset:
//     path: arc/ARC-Easy/ARC-Easy-Test.jsonl  # relative to --data-dir unless absolute; one
//                                   # {name} placeholder in the file name makes it a group of files
//                                   # (mmlu/test/{subject}_test.csv): every file is a group, its docs
//                                   # get the field `name`, results are per group and averaged
//     format: jsonl                 # jsonl | json | csv | hellaswag   (task_data.h)
//     columns: [question, A, B, C, D, answer]   # csv without header; or `header: true`
//   fewshot:                        # optional pool of examples (same keys as dataset; path may
//     path: ...                     # repeat the {name} placeholder; a pool that is the dataset
//     count: 0                      # itself never shows an item its own row)
//     sampler: first                # first | random (seeded by --seed, per item)
//     delimiter: "\n\n"             # after each shot
//   description: "..."              # template, before the shots (optional)
//   context: "Question: {question.stem}\nAnswer:"   # template (doc_template.h)
//   choices: {field: question.choices.*.text}       # or {fields: [A, B]} or {literal: ["no", "yes"]}
//   choice: "{choice}"              # template of each choice's text ({choice} is the raw choice)
//   target_delimiter: " "           # between the context and a choice (default " ")
//   gold: {field: answerKey, labels_field: question.choices.*.label}
//         # or {field: label}  (an index; index_base: 1 for 1-based) or {field: answer, labels: [A, B, C, D]}
//         # or {mask_field: mc2_targets.@values}  (1/0 per choice: true answers)
//   metrics: [acc, acc_norm]        # acc | acc_norm | mc2
//
// Errors name the YAML file and the key (and the line when yaml-cpp knows it).
// Test: build-*/tests/test_task_spec.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "eval/doc_template.h"
#include "eval/task_data.h"

namespace compactor {

struct DataSourceSpec {
  std::string path;  // as written; may hold one {name} placeholder in the file name
  DataFormat format = DataFormat::kJsonl;
  CsvOptions csv;
};

enum class ChoicesKind { kField, kFields, kLiteral };
struct ChoicesSpec {
  ChoicesKind kind = ChoicesKind::kField;
  std::string field;                // kField: a list-valued path
  std::vector<std::string> values;  // kFields: one path per choice; kLiteral: the choices
};

enum class GoldKind { kIndex, kLabel, kMask };
struct GoldSpec {
  GoldKind kind = GoldKind::kIndex;
  std::string field;                // kIndex/kLabel: the gold's field; kMask: a list of 1/0
  std::string labels_field;         // kLabel: list-valued path of the choices' labels
  std::vector<std::string> labels;  // kLabel: literal labels, when labels_field is empty
  int index_base = 0;               // kIndex
};

enum class McMetric { kAcc, kAccNorm, kMc2 };
const char* mc_metric_name(McMetric m);

enum class FewshotSampler { kFirst, kRandom };

struct FewshotSpec {
  std::optional<DataSourceSpec> source;  // none: the task has no pool (--shots > 0 is an error)
  int count = 0;
  FewshotSampler sampler = FewshotSampler::kFirst;
  std::string delimiter = "\n\n";
};

struct TaskSpec {
  std::string name, split;
  std::filesystem::path file;  // the YAML file ("" when parsed from text)
  DataSourceSpec dataset;
  FewshotSpec fewshot;
  DocTemplate description, context, choice;
  std::string target_delimiter = " ";
  ChoicesSpec choices;
  GoldSpec gold;
  std::vector<McMetric> metrics;
  std::string group_field;  // the {name} placeholder of dataset.path ("" when a single file)
};

// `source_name` stands for the file in messages.
Result<TaskSpec> parse_task_spec(std::string_view yaml_text, const std::string& source_name);
Result<TaskSpec> load_task_spec(const std::filesystem::path& yaml_file);

// configs/tasks/<name>.yaml under `tasks_dir`; the error lists the tasks found there.
Result<std::filesystem::path> find_task_file(const std::string& name, const std::filesystem::path& tasks_dir);
std::vector<std::string> list_task_names(const std::filesystem::path& tasks_dir);

// The placeholder of a data path ("subject" for "mmlu/test/{subject}_test.csv"), "" when none;
// an error when the braces are not one placeholder in the file name.
Result<std::string> path_placeholder(const std::string& path);

}  // namespace compactor
