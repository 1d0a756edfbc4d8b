// The run store: an SQLite database (default runs.db) that collects every run record so reports,
// sweeps and Pareto plots can query them (DESIGN.md "Run record"). Schema (PRAGMA user_version 1):
//   runs(id PRIMARY KEY, command, started_at, model_path, model_hash, git_commit, tool_version,
//        wall_seconds, record_json)            -- record_json is the full to_json(RunRecord)
//   metrics(run_id, name, value, stderr, ci_low, ci_high, unit)   -- one row per Metric, for SQL
//   hash_cache(path PRIMARY KEY, size, mtime, hash)               -- per-file SHA-256 cache
// Several processes may append to one file at once (sweeps): writes take the lock up front
// (BEGIN IMMEDIATE) and wait up to kBusyTimeoutMs for it. One RunStore object is one connection;
// use it from one thread at a time. Tested in tests/unit/test_run_store.cpp.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/status.h"
#include "exp/run_record.h"

struct sqlite3;

namespace compactor {

inline constexpr int kRunStoreSchemaVersion = 1;
inline constexpr int kBusyTimeoutMs = 30000;

struct RunFilter {
  std::string command;          // exact match; empty = any
  std::string model_substring;  // substring of model_path; empty = any
  int limit = 0;                // newest `limit` runs; 0 = all
};

class RunStore {
 public:
  // Opens or creates the store (and its parent directory). A file that is not an SQLite database,
  // or one with a newer schema, is an error naming the file.
  static Result<RunStore> open(const std::filesystem::path& path);

  RunStore(RunStore&&) noexcept;
  RunStore& operator=(RunStore&&) noexcept;
  ~RunStore();

  // Inserts the record and its metrics in one transaction; a duplicate id is an error.
  Status append(const RunRecord& record);
  // Newest first (started_at, then insertion order).
  Result<std::vector<RunRecord>> list(const RunFilter& filter = {}) const;
  // The record with this id, or nullopt.
  Result<std::optional<RunRecord>> find(const std::string& id) const;

  // model_content_hash() with per-file hashes cached by (absolute path, size, mtime in ns), so a
  // 13 GB model is hashed once, and again only when one of its files changes.
  Result<std::string> model_content_hash(const std::filesystem::path& model_dir);
  int64_t files_hashed() const { return files_hashed_; }  // cache misses served by this object

  const std::filesystem::path& path() const { return path_; }

 private:
  struct DbCloser {
    void operator()(sqlite3* db) const;
  };
  RunStore(std::filesystem::path path, sqlite3* db);
  Result<std::string> cached_file_hash(const std::filesystem::path& file);

  std::filesystem::path path_;
  std::unique_ptr<sqlite3, DbCloser> db_;
  int64_t files_hashed_ = 0;
};

// What a measuring command does at the end: write_run_record(record, out_dir) when out_dir is given,
// then append to the store at store_path.
Status save_run(const RunRecord& record, const std::optional<std::filesystem::path>& out_dir,
                const std::filesystem::path& store_path);

}  // namespace compactor
