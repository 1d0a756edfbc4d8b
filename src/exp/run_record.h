// Run records: the one JSON document every measuring command writes (DESIGN.md "Run record"):
// tool version, git commit, model path and content hash, effective options, seed, hardware,
// metrics with confidence intervals, command-specific details and phase timings. Written to the
// command's output directory as run-<id>.json (atomic) and appended to the run store (run_store.h).
// Tested in tests/unit/test_run_store.cpp (build/bin: ./build/tests/test_run_store).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/status.h"

namespace compactor {

inline constexpr int kRunRecordVersion = 1;  // "record_version" in the JSON; bump on breaking changes

struct Metric {
  std::string name;                // "ppl", "arc_challenge/acc", "decode_tok_s", ...
  double value = 0;                // NaN is stored as JSON null and read back as NaN
  std::optional<double> stderr_;   // trailing underscore: `stderr` is a macro
  std::optional<double> ci_low, ci_high;  // 95% interval unless the command's details say otherwise
  std::string unit;                // "", "tok/s", "bytes", "s", ...
};

struct RunRecord {
  std::string id;              // unique: UTC time + random suffix, e.g. "20250101T120000Z-1a2b3c4d"
  std::string command;         // "eval", "bench", "quantize", ...
  std::string started_at;      // ISO-8601 UTC with milliseconds, e.g. "2025-01-01T12:00:00.123Z"
  double wall_seconds = 0;
  std::string tool_version, git_commit;
  std::string model_path, model_hash;  // hash: model_content_hash()
  nlohmann::json args = nlohmann::json::object();     // effective options (after recipe merge)
  nlohmann::json hardware = nlohmann::json::object();  // to_json(detect_hardware())
  std::vector<Metric> metrics;
  nlohmann::json details = nlohmann::json::object();  // command-specific (ppl windows, token counts, data hash)
  nlohmann::json timings = nlohmann::json::object();  // named phases in seconds
  std::optional<int64_t> seed;
};

// Fills id, started_at, tool_version, git_commit and hardware; the caller fills the rest.
RunRecord new_run_record(std::string command);

nlohmann::json to_json(const Metric& metric);
nlohmann::json to_json(const RunRecord& record);
// Errors name the missing or mistyped field. Unknown fields are ignored (newer writers may add some).
Result<RunRecord> run_record_from_json(const nlohmann::json& j);

// Writes dir/run-<id>.json through a temp file in dir + rename, so readers never see a partial file
// and an interrupted write leaves nothing behind. Creates dir if needed.
Status write_run_record(const RunRecord& record, const std::filesystem::path& dir);

// Identity of a model directory's weights: SHA-256 over the lines "<sha256 of file>  <name>\n" for
// config.json and every *.safetensors file, sorted by name (byte order). It equals
// `cd DIR && LC_ALL=C sha256sum config.json *.safetensors | sha256sum`, so it can be checked
// without compactor. Errors name the directory (missing, no config.json, no *.safetensors).
Result<std::string> model_content_hash(const std::filesystem::path& model_dir);
// Same, with a caller-supplied per-file hasher (the run store passes its cached one).
using FileHasher = std::function<Result<std::string>(const std::filesystem::path&)>;
Result<std::string> model_content_hash(const std::filesystem::path& model_dir, const FileHasher& file_hash);

}  // namespace compactor
