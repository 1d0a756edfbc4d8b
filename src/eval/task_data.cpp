#include "eval/task_data.h"

#include <charconv>

#include "io/text_file.h"

namespace compactor {

namespace {

// Collects rows, or the first error, or skips (when allowed) with the reason.
struct RowSink {
  DataReadResult out;
  bool skip_bad;
  Status add_error(const std::string& location, const std::string& reason) {
    std::string msg = fmt::format("{}: {}", location, reason);
    if (!skip_bad) return corrupt("{}", msg);
    out.skipped.push_back(std::move(msg));
    return Status::ok();
  }
};

std::vector<std::string_view> split_lines(std::string_view text) {
  std::vector<std::string_view> lines;
  size_t start = 0;
  while (start < text.size()) {
    size_t nl = text.find('\n', start);
    if (nl == std::string_view::npos) nl = text.size();
    std::string_view line = text.substr(start, nl - start);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    lines.push_back(line);
    start = nl + 1;
  }
  return lines;
}

bool blank(std::string_view s) { return s.find_first_not_of(" \t\r") == std::string_view::npos; }

Status parse_jsonl(std::string_view text, const std::string& name, RowSink& sink) {
  const auto lines = split_lines(text);
  for (size_t i = 0; i < lines.size(); ++i) {
    if (blank(lines[i])) continue;
    const std::string where = fmt::format("{}:{}", name, i + 1);
    Doc doc = Doc::parse(lines[i], nullptr, false);
    if (doc.is_discarded()) {
      RETURN_IF_ERROR(sink.add_error(where, "not valid JSON"));
    } else if (!doc.is_object()) {
      RETURN_IF_ERROR(sink.add_error(where, fmt::format("expected a JSON object, found {}", doc.type_name())));
    } else {
      sink.out.rows.push_back({std::move(doc), where});
    }
  }
  return Status::ok();
}

Status parse_json_array(std::string_view text, const std::string& name, RowSink& sink) {
  Doc all = Doc::parse(text, nullptr, false);
  if (all.is_discarded()) return corrupt("{}: not valid JSON", name);
  if (!all.is_array()) return corrupt("{}: expected a JSON array of objects, found {}", name, all.type_name());
  for (size_t i = 0; i < all.size(); ++i) {
    const std::string where = fmt::format("{}:item {}", name, i + 1);
    if (!all[i].is_object()) {
      RETURN_IF_ERROR(sink.add_error(where, fmt::format("expected a JSON object, found {}", all[i].type_name())));
      continue;
    }
    sink.out.rows.push_back({std::move(all[i]), where});
  }
  return Status::ok();
}

Status parse_csv_rows(std::string_view text, const std::string& name, const CsvOptions& opts, RowSink& sink) {
  ASSIGN_OR_RETURN(std::vector<CsvRecord> records, parse_csv(text, name));
  std::vector<std::string> columns = opts.columns;
  size_t first = 0;
  if (opts.header && !records.empty()) {
    if (columns.empty()) columns = records[0].fields;
    first = 1;
  }
  if (columns.empty()) return invalid_argument("{}: csv needs column names (a header row or the task's `columns:`)", name);
  for (size_t r = first; r < records.size(); ++r) {
    const std::string where = fmt::format("{}:{}", name, records[r].line);
    if (records[r].fields.size() != columns.size()) {
      RETURN_IF_ERROR(sink.add_error(
          where, fmt::format("expected {} columns, found {}", columns.size(), records[r].fields.size())));
      continue;
    }
    Doc doc = Doc::object();
    for (size_t c = 0; c < columns.size(); ++c) doc[columns[c]] = std::move(records[r].fields[c]);
    sink.out.rows.push_back({std::move(doc), where});
  }
  return Status::ok();
}

constexpr int kHellaswagLines = 6;  // context, gold index, 4 endings

Status parse_hellaswag(std::string_view text, const std::string& name, RowSink& sink) {
  auto lines = split_lines(text);
  while (!lines.empty() && blank(lines.back())) lines.pop_back();
  if (lines.size() % kHellaswagLines != 0)
    return corrupt("{}:{}: truncated item: expected {} lines per item (context, gold, 4 endings), the file has {}",
                   name, lines.size() / kHellaswagLines * kHellaswagLines + 1, kHellaswagLines, lines.size());
  for (size_t first = 0; first < lines.size(); first += kHellaswagLines) {
    const std::string where = fmt::format("{}:{}", name, first + 1);
    const std::string_view gold = lines[first + 1];
    int label = -1;
    auto [ptr, ec] = std::from_chars(gold.data(), gold.data() + gold.size(), label);
    if (ec != std::errc() || ptr != gold.data() + gold.size()) {
      RETURN_IF_ERROR(sink.add_error(fmt::format("{}:{}", name, first + 2),
                                     fmt::format("expected the gold index (an integer), found \"{}\"", gold)));
      continue;
    }
    Doc doc = {{"ctx", std::string(lines[first])}, {"label", label}, {"endings", Doc::array()}};
    for (int j = 0; j < 4; ++j) doc["endings"].push_back(std::string(lines[first + 2 + j]));
    sink.out.rows.push_back({std::move(doc), where});
  }
  return Status::ok();
}

}  // namespace

Result<DataFormat> data_format_from_name(const std::string& name) {
  if (name == "jsonl") return DataFormat::kJsonl;
  if (name == "json") return DataFormat::kJson;
  if (name == "csv") return DataFormat::kCsv;
  if (name == "hellaswag") return DataFormat::kHellaswag;
  return invalid_argument("unknown data format '{}' (jsonl, json, csv, hellaswag)", name);
}

const char* data_format_name(DataFormat f) {
  switch (f) {
    case DataFormat::kJsonl: return "jsonl";
    case DataFormat::kJson: return "json";
    case DataFormat::kCsv: return "csv";
    case DataFormat::kHellaswag: return "hellaswag";
  }
  return "?";
}

Result<std::vector<CsvRecord>> parse_csv(std::string_view text, const std::string& name) {
  std::vector<CsvRecord> records;
  CsvRecord rec;
  std::string field;
  int64_t line = 1, field_line = 1;
  bool in_quotes = false, record_open = false;
  auto end_record = [&]() {
    rec.fields.push_back(std::move(field));
    field.clear();
    const bool empty_line = rec.fields.size() == 1 && rec.fields[0].empty();
    if (!empty_line) records.push_back(std::move(rec));
    rec = CsvRecord{};
    record_open = false;
  };
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (!record_open) {
      rec.line = line;
      record_open = true;
    }
    if (in_quotes) {
      if (c == '"' && i + 1 < text.size() && text[i + 1] == '"') {
        field += '"';
        ++i;
      } else if (c == '"') {
        in_quotes = false;
      } else {
        if (c == '\n') ++line;
        field += c;
      }
      continue;
    }
    if (c == '"' && field.empty()) {
      in_quotes = true;
      field_line = line;
    } else if (c == ',') {
      rec.fields.push_back(std::move(field));
      field.clear();
    } else if (c == '\n') {
      if (!field.empty() && field.back() == '\r') field.pop_back();
      end_record();
      ++line;
    } else {
      field += c;
    }
  }
  if (in_quotes) return corrupt("{}:{}: unterminated quoted field", name, field_line);
  if (record_open) end_record();
  return records;
}

Result<DataReadResult> parse_task_data(std::string_view text, const std::string& name, DataFormat format,
                                       const CsvOptions& csv, bool skip_bad) {
  RowSink sink{{}, skip_bad};
  switch (format) {
    case DataFormat::kJsonl: RETURN_IF_ERROR(parse_jsonl(text, name, sink)); break;
    case DataFormat::kJson: RETURN_IF_ERROR(parse_json_array(text, name, sink)); break;
    case DataFormat::kCsv: RETURN_IF_ERROR(parse_csv_rows(text, name, csv, sink)); break;
    case DataFormat::kHellaswag: RETURN_IF_ERROR(parse_hellaswag(text, name, sink)); break;
  }
  return std::move(sink.out);
}

Result<DataReadResult> read_task_data(const std::filesystem::path& path, DataFormat format, const CsvOptions& csv,
                                      bool skip_bad) {
  ASSIGN_OR_RETURN(std::string text, read_text_file(path));
  return parse_task_data(text, path.string(), format, csv, skip_bad);
}

}  // namespace compactor
