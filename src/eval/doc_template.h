// Field paths and prompt templates of task files (configs/tasks/*.yaml): how a task turns one data
// row (a JSON document: a jsonl/json object, a CSV row keyed by column, a HellaSwag item) into
// prompt text, with no task-specific code.
//
// Path: dot-separated segments applied left to right:
//   key           object member                 ("question.stem")
//   N             array element (0-based)        ("endings.0")
//   *             every element of an array; the rest of the path applies to each ("question.choices.*.text")
//   @keys/@values an object's keys/values in file order ("mc1_targets.@keys")
// Template: text with `{path|filter|filter(...)}` substitutions; `{{` and `}}` are literal braces.
// Filters (string -> string):
//   strip, lstrip, rstrip   Python's str.strip() family (ASCII whitespace)
//   lower, upper            ASCII case
//   capitalize              Python's str.capitalize(): first character upper, the rest lower
//   replace("a", "b")       every non-overlapping occurrence, left to right (Python's str.replace)
//   strip_prefix("p")       remove a leading "p" when present (Python's str.removeprefix)
//   hellaswag               lm-evaluation-harness's HellaSwag preprocess: strip, " [title]" -> ". ",
//                           drop "[...]" (not spanning a newline), "  " -> " "
// Filter arguments are single- or double-quoted with \\ \" \' \n \t escapes.
// Test: build-*/tests/test_task_spec.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/status.h"

namespace compactor {

using Doc = nlohmann::ordered_json;  // keeps the file's key order (TruthfulQA's answer order matters)

// The value at `path` in `doc`; errors say which segment is missing or has the wrong type.
Result<Doc> lookup_path(const Doc& doc, std::string_view path);
// The value at `path` as a list of strings (numbers are printed); errors when it is not a list.
Result<std::vector<std::string>> lookup_string_list(const Doc& doc, std::string_view path);
// A scalar as text: strings as is, integers and booleans printed, anything else an error.
Result<std::string> scalar_text(const Doc& value, std::string_view path);

struct TemplateFilter {
  std::string name;
  std::vector<std::string> args;
};

class DocTemplate {
 public:
  DocTemplate() = default;
  // Errors name the template and the column of the problem (unclosed brace, unknown filter, ...).
  static Result<DocTemplate> parse(std::string_view text);

  // `vars` are looked up before the document ("choice" while rendering a choice).
  Result<std::string> render(const Doc& doc, const std::map<std::string, std::string>& vars = {}) const;
  const std::string& source() const { return source_; }
  bool empty() const { return parts_.empty(); }

 private:
  struct Part {
    std::string literal;  // used when path is empty
    std::string path;
    std::vector<TemplateFilter> filters;
  };
  std::string source_;
  std::vector<Part> parts_;
};

// One filter applied to a string (the names above); errors for unknown names or wrong arity.
Result<std::string> apply_filter(const TemplateFilter& filter, std::string text);
// lm-evaluation-harness's HellaSwag `preprocess` (see the header comment).
std::string hellaswag_preprocess(std::string text);

}  // namespace compactor
