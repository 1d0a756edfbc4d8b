// Readers of evaluation data files into documents (one JSON object per row, see doc_template.h),
// each with its location ("FILE:LINE") so every later error can name it:
//   jsonl      one JSON object per non-blank line (ARC, BoolQ)
//   json       one JSON array of objects (TruthfulQA's mc_task.json); location "FILE:item N"
//   csv        RFC 4180 (quoted fields, "" escapes, newlines inside quotes), columns named by the
//              task (`columns:`) or by a header row (MMLU's files have no header)
//   hellaswag  llama.cpp's HellaSwag text form: 6 lines per item (context, gold index, 4 endings),
//              read as {"ctx": ..., "label": N, "endings": [4 strings]}
// A malformed row is an error naming its file and line, or, when the caller allows skipping,
// a counted skip with that message.
// Test: build-*/tests/test_task_data.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "eval/doc_template.h"

namespace compactor {

enum class DataFormat { kJsonl, kJson, kCsv, kHellaswag };
Result<DataFormat> data_format_from_name(const std::string& name);  // "jsonl" | "json" | "csv" | "hellaswag"
const char* data_format_name(DataFormat f);

struct DataRow {
  Doc doc;
  std::string location;  // "FILE:LINE" (json: "FILE:item N", 1-based)
};

struct CsvOptions {
  std::vector<std::string> columns;  // names of the columns, in order; empty: take them from the header row
  bool header = false;               // the first record is a header (skipped; names used when `columns` is empty)
};

struct DataReadResult {
  std::vector<DataRow> rows;
  std::vector<std::string> skipped;  // "FILE:LINE: reason" of each malformed row skipped
};

// Reads a whole data file. With `skip_bad`, malformed rows are skipped and listed; without it the
// first one is an error. A missing or empty file is always an error.
Result<DataReadResult> read_task_data(const std::filesystem::path& path, DataFormat format, const CsvOptions& csv,
                                      bool skip_bad);

// The same from text in memory (`name` stands for the file in messages).
Result<DataReadResult> parse_task_data(std::string_view text, const std::string& name, DataFormat format,
                                       const CsvOptions& csv, bool skip_bad);

struct CsvRecord {
  std::vector<std::string> fields;
  int64_t line = 0;  // 1-based line where the record starts
};
// RFC 4180 records; an unterminated quote is an error naming the line where the field starts.
Result<std::vector<CsvRecord>> parse_csv(std::string_view text, const std::string& name);

}  // namespace compactor
