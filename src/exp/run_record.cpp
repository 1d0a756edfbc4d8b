// Run records: JSON (de)serialisation, atomic writes and model content hashes (see run_record.h).
#include "exp/run_record.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <fstream>
#include <limits>
#include <random>


#include "core/hardware.h"
#include "core/version.h"
#include "io/text_file.h"

namespace compactor {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

std::string random_hex_suffix() {
  std::random_device rd;
  return fmt::format("{:08x}", static_cast<uint32_t>(rd()));
}

json optional_number(const std::optional<double>& v) { return v ? json(*v) : json(nullptr); }

Status field_error(const char* key, const char* expected) {
  return invalid_argument("run record: field '{}' missing or not {}", key, expected);
}

Status read_string(const json& j, const char* key, std::string& out, bool required = true) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return required ? field_error(key, "a string") : Status::ok();
  if (!it->is_string()) return field_error(key, "a string");
  out = it->get<std::string>();
  return Status::ok();
}

// Numbers may be null (NaN/inf are written as null by nlohmann::json).
Status read_number(const json& j, const char* key, std::optional<double>& out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return Status::ok();
  if (!it->is_number()) return field_error(key, "a number");
  out = it->get<double>();
  return Status::ok();
}

Status read_object(const json& j, const char* key, json& out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return Status::ok();
  if (!it->is_object()) return field_error(key, "an object");
  out = *it;
  return Status::ok();
}

Result<Metric> metric_from_json(const json& j) {
  if (!j.is_object()) return invalid_argument("run record: a 'metrics' entry is not an object");
  Metric m;
  RETURN_IF_ERROR(read_string(j, "name", m.name));
  std::optional<double> value;
  RETURN_IF_ERROR(read_number(j, "value", value).with_context("metric " + m.name));
  m.value = value.value_or(std::numeric_limits<double>::quiet_NaN());
  RETURN_IF_ERROR(read_number(j, "stderr", m.stderr_).with_context("metric " + m.name));
  RETURN_IF_ERROR(read_number(j, "ci_low", m.ci_low).with_context("metric " + m.name));
  RETURN_IF_ERROR(read_number(j, "ci_high", m.ci_high).with_context("metric " + m.name));
  RETURN_IF_ERROR(read_string(j, "unit", m.unit, /*required=*/false));
  return m;
}

Status read_header(const json& j, RunRecord& r) {
  RETURN_IF_ERROR(read_string(j, "id", r.id));
  RETURN_IF_ERROR(read_string(j, "command", r.command));
  RETURN_IF_ERROR(read_string(j, "started_at", r.started_at));
  RETURN_IF_ERROR(read_string(j, "tool_version", r.tool_version, false));
  RETURN_IF_ERROR(read_string(j, "git_commit", r.git_commit, false));
  RETURN_IF_ERROR(read_string(j, "model_path", r.model_path, false));
  RETURN_IF_ERROR(read_string(j, "model_hash", r.model_hash, false));
  std::optional<double> wall;
  RETURN_IF_ERROR(read_number(j, "wall_seconds", wall));
  r.wall_seconds = wall.value_or(0.0);
  auto seed = j.find("seed");
  if (seed != j.end() && !seed->is_null()) {
    if (!seed->is_number_integer()) return field_error("seed", "an integer");
    r.seed = seed->get<int64_t>();
  }
  return Status::ok();
}

Status read_body(const json& j, RunRecord& r) {
  RETURN_IF_ERROR(read_object(j, "args", r.args));
  RETURN_IF_ERROR(read_object(j, "hardware", r.hardware));
  RETURN_IF_ERROR(read_object(j, "details", r.details));
  RETURN_IF_ERROR(read_object(j, "timings", r.timings));
  auto metrics = j.find("metrics");
  if (metrics == j.end() || metrics->is_null()) return Status::ok();
  if (!metrics->is_array()) return field_error("metrics", "an array");
  for (const json& m : *metrics) {
    ASSIGN_OR_RETURN(Metric metric, metric_from_json(m));
    r.metrics.push_back(std::move(metric));
  }
  return Status::ok();
}

Result<std::vector<fs::path>> model_files(const fs::path& model_dir) {
  std::error_code ec;
  if (!fs::is_directory(model_dir, ec)) return not_found("model directory {} does not exist", model_dir.string());
  std::vector<fs::path> files;
  bool has_weights = false;
  for (const auto& entry : fs::directory_iterator(model_dir, ec)) {
    const std::string name = entry.path().filename().string();
    bool weights = entry.path().extension() == ".safetensors";
    if ((weights || name == "config.json") && entry.is_regular_file()) files.push_back(entry.path());
    has_weights = has_weights || weights;
  }
  if (ec) return io_error("cannot list model directory {}: {}", model_dir.string(), ec.message());
  if (!fs::is_regular_file(model_dir / "config.json")) return not_found("{} has no config.json", model_dir.string());
  if (!has_weights) return not_found("{} has no *.safetensors files", model_dir.string());
  std::sort(files.begin(), files.end(),
            [](const fs::path& a, const fs::path& b) { return a.filename().string() < b.filename().string(); });
  return files;
}

}  // namespace

RunRecord new_run_record(std::string command) {
  const int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::system_clock::now().time_since_epoch()).count();
  const std::time_t now_s = static_cast<std::time_t>(now_ms / 1000);
  std::tm utc{};
  gmtime_r(&now_s, &utc);
  RunRecord r;
  r.command = std::move(command);
  r.id = fmt::format("{:04d}{:02d}{:02d}T{:02d}{:02d}{:02d}Z-{}", utc.tm_year + 1900, utc.tm_mon + 1, utc.tm_mday,
                     utc.tm_hour, utc.tm_min, utc.tm_sec, random_hex_suffix());
  r.started_at = fmt::format("{:04d}-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}.{:03d}Z", utc.tm_year + 1900, utc.tm_mon + 1,
                             utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec, static_cast<int>(now_ms % 1000));
  r.tool_version = std::string(tool_version());
  r.git_commit = std::string(git_commit());
  r.hardware = to_json(detect_hardware());
  return r;
}

json to_json(const Metric& m) {
  return {{"name", m.name}, {"value", std::isfinite(m.value) ? json(m.value) : json(nullptr)},
          {"stderr", optional_number(m.stderr_)}, {"ci_low", optional_number(m.ci_low)},
          {"ci_high", optional_number(m.ci_high)}, {"unit", m.unit}};
}

json to_json(const RunRecord& r) {
  json metrics = json::array();
  for (const Metric& m : r.metrics) metrics.push_back(to_json(m));
  return {{"record_version", kRunRecordVersion}, {"id", r.id}, {"command", r.command},
          {"started_at", r.started_at}, {"wall_seconds", r.wall_seconds},
          {"tool_version", r.tool_version}, {"git_commit", r.git_commit},
          {"model_path", r.model_path}, {"model_hash", r.model_hash},
          {"seed", r.seed ? json(*r.seed) : json(nullptr)}, {"args", r.args}, {"hardware", r.hardware},
          {"metrics", metrics}, {"details", r.details}, {"timings", r.timings}};
}

Result<RunRecord> run_record_from_json(const json& j) {
  if (!j.is_object()) return invalid_argument("run record: expected a JSON object, got {}", j.type_name());
  auto version = j.find("record_version");
  if (version != j.end() && version->is_number_integer() && version->get<int>() > kRunRecordVersion) {
    return unsupported("run record version {} is newer than this compactor reads ({})", version->get<int>(),
                       kRunRecordVersion);
  }
  RunRecord r;
  RETURN_IF_ERROR(read_header(j, r));
  RETURN_IF_ERROR(read_body(j, r).with_context("run " + r.id));
  return r;
}

Status write_run_record(const RunRecord& record, const fs::path& dir) {
  if (record.id.empty()) return invalid_argument("write_run_record: the record has no id");
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return io_error("cannot create output directory {}: {}", dir.string(), ec.message());
  const fs::path final_path = dir / ("run-" + record.id + ".json");
  const fs::path tmp_path = dir / fmt::format(".run-{}.json.tmp.{}", record.id, static_cast<long>(getpid()));
  {
    std::ofstream out(tmp_path, std::ios::binary | std::ios::trunc);
    out << to_json(record).dump(2) << '\n';
    out.flush();
    if (!out) {
      fs::remove(tmp_path, ec);
      return io_error("cannot write run record {}", tmp_path.string());
    }
  }
  fs::rename(tmp_path, final_path, ec);
  if (ec) {
    std::error_code ignored;
    fs::remove(tmp_path, ignored);
    return io_error("cannot rename {} to {}: {}", tmp_path.string(), final_path.string(), ec.message());
  }
  return Status::ok();
}

Result<std::string> model_content_hash(const fs::path& model_dir) {
  return model_content_hash(model_dir, [](const fs::path& file) { return sha256_file(file); });
}

Result<std::string> model_content_hash(const fs::path& model_dir, const FileHasher& file_hash) {
  ASSIGN_OR_RETURN(std::vector<fs::path> files, model_files(model_dir));
  std::string manifest;  // sha256sum's output format: "<hex>  <name>\n"
  for (const fs::path& file : files) {
    ASSIGN_OR_RETURN(std::string hex, file_hash(file));
    manifest += hex + "  " + file.filename().string() + "\n";
  }
  return sha256_hex(manifest);
}

}  // namespace compactor
