// SQLite run store (see run_store.h). Uses the sqlite3 C API directly: a tiny statement wrapper,
// IMMEDIATE transactions for writers, and JSON text as the source of truth for each record.
#include "exp/run_store.h"

#include <sqlite3.h>
#include <sys/stat.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <string_view>

#include "io/text_file.h"

namespace compactor {
namespace {

namespace fs = std::filesystem;

constexpr const char* kSchemaSql = R"sql(
CREATE TABLE IF NOT EXISTS runs(
  id TEXT PRIMARY KEY, command TEXT NOT NULL, started_at TEXT NOT NULL, model_path TEXT,
  model_hash TEXT, git_commit TEXT, tool_version TEXT, wall_seconds REAL, record_json TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS runs_by_time ON runs(started_at);
CREATE TABLE IF NOT EXISTS metrics(
  run_id TEXT NOT NULL REFERENCES runs(id), name TEXT NOT NULL, value REAL, stderr REAL,
  ci_low REAL, ci_high REAL, unit TEXT);
CREATE INDEX IF NOT EXISTS metrics_by_run ON metrics(run_id);
CREATE TABLE IF NOT EXISTS hash_cache(
  path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime INTEGER NOT NULL, hash TEXT NOT NULL);
)sql";

Status db_error(sqlite3* db, const fs::path& path, int rc, std::string_view what) {
  const char* msg = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  switch (rc & 0xFF) {
    case SQLITE_NOTADB:
      return corrupt("run store {}: not an SQLite database ({} while {})", path.string(), msg, what);
    case SQLITE_CORRUPT:
      return corrupt("run store {}: database is corrupt ({} while {})", path.string(), msg, what);
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return io_error("run store {}: still locked by another writer after {} ms while {}", path.string(),
                      kBusyTimeoutMs, what);
    default:
      return io_error("run store {}: {} while {}", path.string(), msg, what);
  }
}

// A prepared statement with positional binds (1-based, as SQLite numbers them).
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) { rc_ = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr); }
  ~Stmt() { sqlite3_finalize(stmt_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  int prepare_rc() const { return rc_; }
  void bind(int i, std::string_view s) { sqlite3_bind_text(stmt_, i, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT); }
  void bind(int i, int64_t v) { sqlite3_bind_int64(stmt_, i, v); }
  void bind(int i, double v) { sqlite3_bind_double(stmt_, i, v); }
  void bind(int i, const std::optional<double>& v) { v ? bind(i, *v) : (void)sqlite3_bind_null(stmt_, i); }
  int step() { return sqlite3_step(stmt_); }
  void reset() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }
  std::string text(int col) const {
    const unsigned char* p = sqlite3_column_text(stmt_, col);
    return p ? std::string(reinterpret_cast<const char*>(p), sqlite3_column_bytes(stmt_, col)) : std::string();
  }
  int64_t int64(int col) const { return sqlite3_column_int64(stmt_, col); }

 private:
  sqlite3_stmt* stmt_ = nullptr;
  int rc_ = SQLITE_OK;
};

Status exec_sql(sqlite3* db, const fs::path& path, const char* sql, std::string_view what) {
  int rc = sqlite3_exec(db, sql, nullptr, nullptr, nullptr);
  return rc == SQLITE_OK ? Status::ok() : db_error(db, path, rc, what);
}

// BEGIN IMMEDIATE takes the write lock at the start, so two writers never deadlock upgrading
// read locks; the busy timeout makes the second one wait.
class Transaction {
 public:
  Transaction(sqlite3* db, const fs::path& path) : db_(db), path_(path) {
    begin_ = exec_sql(db, path, "BEGIN IMMEDIATE", "starting a write transaction");
  }
  ~Transaction() {
    if (begin_.is_ok() && !committed_) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }
  const Status& begin_status() const { return begin_; }
  Status commit() {
    RETURN_IF_ERROR(exec_sql(db_, path_, "COMMIT", "committing"));
    committed_ = true;
    return Status::ok();
  }

 private:
  sqlite3* db_;
  const fs::path& path_;
  Status begin_;
  bool committed_ = false;
};

Result<int> user_version(sqlite3* db, const fs::path& path) {
  Stmt st(db, "PRAGMA user_version");
  if (st.prepare_rc() != SQLITE_OK) return db_error(db, path, st.prepare_rc(), "reading the schema version");
  int rc = st.step();
  if (rc != SQLITE_ROW) return db_error(db, path, rc, "reading the schema version");
  return static_cast<int>(st.int64(0));
}

Status create_schema(sqlite3* db, const fs::path& path) {
  Transaction tx(db, path);
  RETURN_IF_ERROR(tx.begin_status());
  ASSIGN_OR_RETURN(int version, user_version(db, path));  // another process may have won the race
  if (version == kRunStoreSchemaVersion) return Status::ok();
  RETURN_IF_ERROR(exec_sql(db, path, kSchemaSql, "creating the schema"));
  RETURN_IF_ERROR(exec_sql(db, path, "PRAGMA user_version = 1", "setting the schema version"));
  static_assert(kRunStoreSchemaVersion == 1, "update the PRAGMA above and add a migration");
  return tx.commit();
}

Status insert_metrics(sqlite3* db, const fs::path& path, const RunRecord& record) {
  Stmt st(db, "INSERT INTO metrics(run_id, name, value, stderr, ci_low, ci_high, unit) VALUES(?,?,?,?,?,?,?)");
  if (st.prepare_rc() != SQLITE_OK) return db_error(db, path, st.prepare_rc(), "preparing a metric insert");
  for (const Metric& m : record.metrics) {
    st.bind(1, record.id);
    st.bind(2, m.name);
    st.bind(3, std::isfinite(m.value) ? std::optional<double>(m.value) : std::nullopt);
    st.bind(4, m.stderr_);
    st.bind(5, m.ci_low);
    st.bind(6, m.ci_high);
    st.bind(7, m.unit);
    int rc = st.step();
    if (rc != SQLITE_DONE) return db_error(db, path, rc, "inserting metric " + m.name);
    st.reset();
  }
  return Status::ok();
}

Result<RunRecord> parse_stored_record(const fs::path& path, const std::string& id, const std::string& text) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return corrupt("run store {}: run {} has unreadable record_json", path.string(), id);
  Result<RunRecord> record = run_record_from_json(j);
  if (!record) return record.status().with_context(fmt::format("run store {}", path.string()));
  return record;
}

struct FileStamp {
  int64_t size = 0;
  int64_t mtime_ns = 0;
  bool operator==(const FileStamp&) const = default;
};

Result<FileStamp> stamp_of(const fs::path& file) {
  struct stat st {};
  if (::stat(file.c_str(), &st) != 0) return io_error("cannot stat {}: {}", file.string(), std::strerror(errno));
  return FileStamp{static_cast<int64_t>(st.st_size),
                   static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec};
}

}  // namespace

void RunStore::DbCloser::operator()(sqlite3* db) const { sqlite3_close_v2(db); }

RunStore::RunStore(fs::path path, sqlite3* db) : path_(std::move(path)), db_(db) {}
RunStore::RunStore(RunStore&&) noexcept = default;
RunStore& RunStore::operator=(RunStore&&) noexcept = default;
RunStore::~RunStore() = default;

Result<RunStore> RunStore::open(const fs::path& path) {
  std::error_code ec;
  if (path.has_parent_path()) fs::create_directories(path.parent_path(), ec);
  if (ec) return io_error("cannot create the directory of run store {}: {}", path.string(), ec.message());
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &raw, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
  RunStore store(path, raw);  // owns the handle even when open failed (SQLite requires the close)
  if (rc != SQLITE_OK) return db_error(raw, path, rc, "opening");
  sqlite3_busy_timeout(raw, kBusyTimeoutMs);
  ASSIGN_OR_RETURN(int version, user_version(raw, path));
  if (version > kRunStoreSchemaVersion) {
    return unsupported("run store {}: schema version {} is newer than this compactor knows ({})", path.string(),
                       version, kRunStoreSchemaVersion);
  }
  if (version < kRunStoreSchemaVersion) RETURN_IF_ERROR(create_schema(raw, path));
  return Result<RunStore>(std::move(store));
}

Status RunStore::append(const RunRecord& record) {
  sqlite3* db = db_.get();
  Transaction tx(db, path_);
  RETURN_IF_ERROR(tx.begin_status());
  Stmt st(db,
          "INSERT INTO runs(id, command, started_at, model_path, model_hash, git_commit, tool_version, "
          "wall_seconds, record_json) VALUES(?,?,?,?,?,?,?,?,?)");
  if (st.prepare_rc() != SQLITE_OK) return db_error(db, path_, st.prepare_rc(), "preparing a run insert");
  st.bind(1, record.id);
  st.bind(2, record.command);
  st.bind(3, record.started_at);
  st.bind(4, record.model_path);
  st.bind(5, record.model_hash);
  st.bind(6, record.git_commit);
  st.bind(7, record.tool_version);
  st.bind(8, record.wall_seconds);
  st.bind(9, to_json(record).dump());
  int rc = st.step();
  if ((rc & 0xFF) == SQLITE_CONSTRAINT) {
    return invalid_argument("run store {}: a run with id {} is already stored", path_.string(), record.id);
  }
  if (rc != SQLITE_DONE) return db_error(db, path_, rc, "inserting run " + record.id);
  RETURN_IF_ERROR(insert_metrics(db, path_, record));
  return tx.commit();
}

Result<std::vector<RunRecord>> RunStore::list(const RunFilter& filter) const {
  sqlite3* db = db_.get();
  Stmt st(db,
          "SELECT id, record_json FROM runs WHERE (?1 = '' OR command = ?1) AND (?2 = '' OR instr(model_path, ?2) > 0) "
          "ORDER BY started_at DESC, rowid DESC LIMIT ?3");
  if (st.prepare_rc() != SQLITE_OK) return db_error(db, path_, st.prepare_rc(), "preparing a run query");
  st.bind(1, filter.command);
  st.bind(2, filter.model_substring);
  st.bind(3, static_cast<int64_t>(filter.limit > 0 ? filter.limit : -1));
  std::vector<RunRecord> runs;
  int rc;
  while ((rc = st.step()) == SQLITE_ROW) {
    ASSIGN_OR_RETURN(RunRecord record, parse_stored_record(path_, st.text(0), st.text(1)));
    runs.push_back(std::move(record));
  }
  if (rc != SQLITE_DONE) return db_error(db, path_, rc, "listing runs");
  return runs;
}

Result<std::optional<RunRecord>> RunStore::find(const std::string& id) const {
  sqlite3* db = db_.get();
  Stmt st(db, "SELECT record_json FROM runs WHERE id = ?1");
  if (st.prepare_rc() != SQLITE_OK) return db_error(db, path_, st.prepare_rc(), "preparing a run query");
  st.bind(1, id);
  int rc = st.step();
  if (rc == SQLITE_DONE) return std::optional<RunRecord>();
  if (rc != SQLITE_ROW) return db_error(db, path_, rc, "reading run " + id);
  ASSIGN_OR_RETURN(RunRecord record, parse_stored_record(path_, id, st.text(0)));
  return std::optional<RunRecord>(std::move(record));
}

Result<std::string> RunStore::cached_file_hash(const fs::path& file) {
  std::error_code ec;
  fs::path key = fs::weakly_canonical(fs::absolute(file), ec);
  if (ec) key = fs::absolute(file);
  ASSIGN_OR_RETURN(FileStamp before, stamp_of(key));
  sqlite3* db = db_.get();
  {
    Stmt st(db, "SELECT hash FROM hash_cache WHERE path = ?1 AND size = ?2 AND mtime = ?3");
    if (st.prepare_rc() != SQLITE_OK) return db_error(db, path_, st.prepare_rc(), "reading the hash cache");
    st.bind(1, key.string());
    st.bind(2, before.size);
    st.bind(3, before.mtime_ns);
    if (st.step() == SQLITE_ROW) return st.text(0);
  }
  ASSIGN_OR_RETURN(std::string hash, sha256_file(key));
  ++files_hashed_;
  ASSIGN_OR_RETURN(FileStamp after, stamp_of(key));
  if (!(after == before)) return hash;  // changed while hashing: do not pin this hash to either stamp
  Stmt put(db, "INSERT OR REPLACE INTO hash_cache(path, size, mtime, hash) VALUES(?1, ?2, ?3, ?4)");
  if (put.prepare_rc() != SQLITE_OK) return db_error(db, path_, put.prepare_rc(), "writing the hash cache");
  put.bind(1, key.string());
  put.bind(2, before.size);
  put.bind(3, before.mtime_ns);
  put.bind(4, hash);
  int rc = put.step();
  if (rc != SQLITE_DONE) return db_error(db, path_, rc, "writing the hash cache for " + key.string());
  return hash;
}

Result<std::string> RunStore::model_content_hash(const fs::path& model_dir) {
  return compactor::model_content_hash(model_dir, [this](const fs::path& file) { return cached_file_hash(file); });
}

Status save_run(const RunRecord& record, const std::optional<fs::path>& out_dir, const fs::path& store_path) {
  if (out_dir) RETURN_IF_ERROR(write_run_record(record, *out_dir));
  ASSIGN_OR_RETURN(RunStore store, RunStore::open(store_path));
  return store.append(record);
}

}  // namespace compactor
