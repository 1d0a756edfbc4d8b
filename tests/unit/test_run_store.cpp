// Run records, the SQLite run store, model content hashes, SHA-256 and host detection.
// Run: ./build/tests/test_run_store   (reads ../shared/models/stories260K; writes only under /tmp)
#include <sqlite3.h>
#include <unistd.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <regex>
#include <thread>

#include <gtest/gtest.h>

#include "core/hardware.h"
#include "core/version.h"
#include "exp/run_record.h"
#include "exp/run_store.h"
#include "io/text_file.h"
#include "support/fixtures.h"

namespace compactor {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

class TempDir {
 public:
  explicit TempDir(const std::string& prefix) : path_(test::make_temp_dir(prefix)) {}
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

RunRecord sample_record(const std::string& id, const std::string& command, const std::string& model,
                        const std::string& started_at) {
  RunRecord r;
  r.id = id;
  r.command = command;
  r.started_at = started_at;
  r.wall_seconds = 12.5;
  r.tool_version = "0.1.0";
  r.git_commit = "abcdef123456";
  r.model_path = model;
  r.model_hash = std::string(64, 'a');
  r.args = {{"ctx", 512}, {"tasks", {"ppl"}}};
  r.hardware = {{"cores", 2}};
  r.metrics.push_back({"ppl", 23.4, 0.1, 23.2, 23.6, ""});
  r.metrics.push_back({"tokens", 1000, std::nullopt, std::nullopt, std::nullopt, "tok"});
  r.details = {{"windows", 7}, {"data_hash", "ff"}};
  r.timings = {{"load", 0.5}, {"forward", 11.0}};
  r.seed = 1234;
  return r;
}

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_text(const fs::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << text;
}

int64_t sql_count(const fs::path& db_path, const char* sql) {
  sqlite3* db = nullptr;
  EXPECT_EQ(sqlite3_open(db_path.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  EXPECT_EQ(sqlite3_prepare_v2(db, sql, -1, &st, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
  int64_t n = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
  sqlite3_finalize(st);
  sqlite3_close(db);
  return n;
}

void sql_exec(const fs::path& db_path, const char* sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(db_path.c_str(), &db), SQLITE_OK);
  EXPECT_EQ(sqlite3_exec(db, sql, nullptr, nullptr, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
  sqlite3_close(db);
}

// ---- run records ----

TEST(RunRecord, JsonRoundTripKeepsEveryField) {
  RunRecord r = sample_record("20250101T000000Z-00000001", "eval", "/m/llama", "2025-01-01T00:00:00.000Z");
  r.metrics.push_back({"broken", std::nan(""), std::nullopt, std::nullopt, std::nullopt, ""});
  json j = to_json(r);
  Result<RunRecord> back = run_record_from_json(json::parse(j.dump()));
  ASSERT_TRUE(back.is_ok()) << back.status().message();
  EXPECT_EQ(to_json(*back), j);
  EXPECT_EQ(back->seed, 1234);
  ASSERT_EQ(back->metrics.size(), 3u);
  EXPECT_DOUBLE_EQ(back->metrics[0].value, 23.4);
  EXPECT_EQ(back->metrics[0].ci_high, 23.6);
  EXPECT_FALSE(back->metrics[1].stderr_.has_value());
  EXPECT_EQ(back->metrics[1].unit, "tok");
  EXPECT_TRUE(std::isnan(back->metrics[2].value));
  EXPECT_EQ(back->args["ctx"], 512);
  EXPECT_EQ(back->timings["forward"], 11.0);
}

TEST(RunRecord, MissingOrMistypedFieldIsNamed) {
  json j = to_json(sample_record("x", "eval", "m", "2025-01-01T00:00:00.000Z"));
  j.erase("command");
  Result<RunRecord> r = run_record_from_json(j);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("'command'"), std::string::npos) << r.status().message();

  j = to_json(sample_record("x", "eval", "m", "2025-01-01T00:00:00.000Z"));
  j["metrics"][0]["value"] = "high";
  r = run_record_from_json(j);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("'value'"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("ppl"), std::string::npos) << r.status().message();

  EXPECT_FALSE(run_record_from_json(json::array()).is_ok());
}

TEST(RunRecord, NewRecordFillsIdentityAndHost) {
  RunRecord a = new_run_record("bench");
  RunRecord b = new_run_record("bench");
  EXPECT_EQ(a.command, "bench");
  EXPECT_TRUE(std::regex_match(a.id, std::regex(R"(\d{8}T\d{6}Z-[0-9a-f]{8})"))) << a.id;
  EXPECT_TRUE(std::regex_match(a.started_at, std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)")))
      << a.started_at;
  EXPECT_NE(a.id, b.id);
  EXPECT_EQ(a.tool_version, tool_version());
  EXPECT_EQ(a.git_commit, git_commit());
  EXPECT_FALSE(a.tool_version.empty());
  EXPECT_GT(a.hardware["cores"].get<int>(), 0);
}

TEST(RunRecord, WriteIsAtomicAndLeavesNoTemp) {
  TempDir dir("run-record");
  RunRecord r = sample_record("20250101T000000Z-0000abcd", "eval", "/m", "2025-01-01T00:00:00.000Z");
  const fs::path out = dir.path() / "nested" / "out";
  ASSERT_TRUE(write_run_record(r, out).is_ok());
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(out)) names.push_back(e.path().filename().string());
  ASSERT_EQ(names, std::vector<std::string>{"run-20250101T000000Z-0000abcd.json"});
  Result<RunRecord> back = run_record_from_json(json::parse(read_text(out / names[0])));
  ASSERT_TRUE(back.is_ok()) << back.status().message();
  EXPECT_EQ(to_json(*back), to_json(r));

  r.wall_seconds = 99;  // rewriting replaces the file in one step
  ASSERT_TRUE(write_run_record(r, out).is_ok());
  EXPECT_EQ(json::parse(read_text(out / names[0]))["wall_seconds"], 99.0);
  EXPECT_EQ(std::distance(fs::directory_iterator(out), fs::directory_iterator()), 1);
}

TEST(RunRecord, WriteIntoAFileIsAnError) {
  TempDir dir("run-record");
  write_text(dir.path() / "plain", "x");
  Status st = write_run_record(sample_record("id1", "eval", "m", "t"), dir.path() / "plain");
  ASSERT_FALSE(st.is_ok());
  EXPECT_NE(st.message().find("plain"), std::string::npos) << st.message();
}

// ---- run store ----

TEST(RunStore, AppendListFilterFind) {
  TempDir dir("run-store");
  const fs::path db = dir.path() / "sub" / "runs.db";
  Result<RunStore> store = RunStore::open(db);
  ASSERT_TRUE(store.is_ok()) << store.status().message();
  ASSERT_TRUE(store->append(sample_record("r1", "eval", "/models/llama-7b", "2025-01-01T00:00:01.000Z")).is_ok());
  ASSERT_TRUE(store->append(sample_record("r2", "bench", "/models/llama-7b", "2025-01-01T00:00:03.000Z")).is_ok());
  ASSERT_TRUE(store->append(sample_record("r3", "eval", "/models/qwen-1b", "2025-01-01T00:00:02.000Z")).is_ok());

  auto ids = [](const Result<std::vector<RunRecord>>& runs) {
    std::vector<std::string> out;
    for (const RunRecord& r : runs.value()) out.push_back(r.id);
    return out;
  };
  auto filter = [](std::string command, std::string model, int limit) {
    RunFilter f;
    f.command = std::move(command);
    f.model_substring = std::move(model);
    f.limit = limit;
    return f;
  };
  auto all = store->list();
  ASSERT_TRUE(all.is_ok()) << all.status().message();
  EXPECT_EQ(ids(all), (std::vector<std::string>{"r2", "r3", "r1"}));
  EXPECT_EQ(ids(store->list(filter("eval", "", 0))), (std::vector<std::string>{"r3", "r1"}));
  EXPECT_EQ(ids(store->list(filter("", "llama", 0))), (std::vector<std::string>{"r2", "r1"}));
  EXPECT_EQ(ids(store->list(filter("eval", "qwen", 0))), (std::vector<std::string>{"r3"}));
  EXPECT_EQ(ids(store->list(filter("", "", 2))), (std::vector<std::string>{"r2", "r3"}));
  EXPECT_TRUE(store->list(filter("quantize", "", 0))->empty());

  auto found = store->find("r3");
  ASSERT_TRUE(found.is_ok() && found->has_value());
  EXPECT_EQ(to_json(**found), to_json(sample_record("r3", "eval", "/models/qwen-1b", "2025-01-01T00:00:02.000Z")));
  EXPECT_FALSE(store->find("nope")->has_value());

  EXPECT_EQ(sql_count(db, "SELECT COUNT(*) FROM metrics"), 6);
  EXPECT_EQ(sql_count(db, "SELECT COUNT(*) FROM metrics WHERE run_id = 'r2' AND name = 'ppl' AND ci_low = 23.2"), 1);
  EXPECT_EQ(sql_count(db, "PRAGMA user_version"), kRunStoreSchemaVersion);
}

TEST(RunStore, DuplicateIdIsRejectedAndLeavesNoPartialRows) {
  TempDir dir("run-store");
  auto store = RunStore::open(dir.path() / "runs.db");
  ASSERT_TRUE(store.is_ok());
  ASSERT_TRUE(store->append(sample_record("dup", "eval", "m", "2025-01-01T00:00:00.000Z")).is_ok());
  Status st = store->append(sample_record("dup", "bench", "m", "2025-01-02T00:00:00.000Z"));
  ASSERT_FALSE(st.is_ok());
  EXPECT_NE(st.message().find("dup"), std::string::npos) << st.message();
  EXPECT_EQ(sql_count(dir.path() / "runs.db", "SELECT COUNT(*) FROM metrics"), 2);
  EXPECT_EQ(store->list()->size(), 1u);
}

TEST(RunStore, TwoStoresAppendToOneFile) {
  TempDir dir("run-store");
  const fs::path db = dir.path() / "runs.db";
  auto a = RunStore::open(db);
  auto b = RunStore::open(db);
  ASSERT_TRUE(a.is_ok() && b.is_ok());
  ASSERT_TRUE(a->append(sample_record("a0", "eval", "m", "2025-01-01T00:00:00.000Z")).is_ok());
  ASSERT_TRUE(b->append(sample_record("b0", "eval", "m", "2025-01-01T00:00:01.000Z")).is_ok());
  EXPECT_EQ(a->list()->size(), 2u);

  constexpr int kPerWriter = 25;
  auto writer = [&](char tag, Status* result) {
    auto store = RunStore::open(db);
    if (!store.is_ok()) return void(*result = store.status());
    for (int i = 0; i < kPerWriter && result->is_ok(); ++i) {
      *result = store->append(sample_record(fmt::format("{}{}", tag, i + 1), "eval", "m", "2025-01-02T00:00:00.000Z"));
    }
  };
  Status s1, s2;
  std::thread t1(writer, 'x', &s1), t2(writer, 'y', &s2);
  t1.join();
  t2.join();
  EXPECT_TRUE(s1.is_ok()) << s1.message();
  EXPECT_TRUE(s2.is_ok()) << s2.message();
  EXPECT_EQ(b->list()->size(), 2u + 2 * kPerWriter);
  EXPECT_EQ(sql_count(db, "SELECT COUNT(*) FROM metrics"), 2 * (2 + 2 * kPerWriter));
}

TEST(RunStore, ReopenKeepsRuns) {
  TempDir dir("run-store");
  {
    auto store = RunStore::open(dir.path() / "runs.db");
    ASSERT_TRUE(store.is_ok());
    ASSERT_TRUE(store->append(sample_record("keep", "eval", "m", "2025-01-01T00:00:00.000Z")).is_ok());
  }
  auto store = RunStore::open(dir.path() / "runs.db");
  ASSERT_TRUE(store.is_ok()) << store.status().message();
  ASSERT_EQ(store->list()->size(), 1u);
  EXPECT_EQ(store->list()->front().id, "keep");
}

TEST(RunStore, FileThatIsNotADatabaseIsNamed) {
  TempDir dir("run-store");
  const fs::path bad = dir.path() / "notes.db";
  std::string junk;
  for (int i = 0; i < 200; ++i) junk += "this is a text file, not a database\n";
  write_text(bad, junk);
  auto store = RunStore::open(bad);
  ASSERT_FALSE(store.is_ok());
  EXPECT_EQ(store.status().code(), StatusCode::kCorrupt);
  EXPECT_NE(store.status().message().find(bad.string()), std::string::npos) << store.status().message();
  EXPECT_NE(store.status().message().find("not an SQLite database"), std::string::npos) << store.status().message();
  EXPECT_EQ(read_text(bad), junk);  // left untouched
}

TEST(RunStore, NewerSchemaIsRejected) {
  TempDir dir("run-store");
  const fs::path db = dir.path() / "runs.db";
  ASSERT_TRUE(RunStore::open(db).is_ok());
  sql_exec(db, "PRAGMA user_version = 99");
  auto store = RunStore::open(db);
  ASSERT_FALSE(store.is_ok());
  EXPECT_EQ(store.status().code(), StatusCode::kUnsupported);
  EXPECT_NE(store.status().message().find("99"), std::string::npos) << store.status().message();
}

TEST(RunStore, SaveRunWritesFileAndStore) {
  TempDir dir("run-store");
  RunRecord r = sample_record("saved", "eval", "m", "2025-01-01T00:00:00.000Z");
  ASSERT_TRUE(save_run(r, dir.path() / "out", dir.path() / "runs.db").is_ok());
  EXPECT_TRUE(fs::exists(dir.path() / "out" / "run-saved.json"));
  EXPECT_EQ(RunStore::open(dir.path() / "runs.db")->list()->size(), 1u);
}

// ---- hashes ----

TEST(Sha256, KnownVectorsAndChunkBoundaries) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  TempDir dir("sha256");
  std::string big((size_t{9} << 20) + 123, '\0');  // crosses two 4 MiB chunk boundaries
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>((i * 2654435761u) >> 13);
  write_text(dir.path() / "big.bin", big);
  Result<std::string> h = sha256_file(dir.path() / "big.bin");
  ASSERT_TRUE(h.is_ok()) << h.status().message();
  EXPECT_EQ(*h, sha256_hex(big));
  Result<std::string> missing = sha256_file(dir.path() / "nope.bin");
  ASSERT_FALSE(missing.is_ok());
  EXPECT_NE(missing.status().message().find("nope.bin"), std::string::npos);
}

fs::path copy_model(const fs::path& dst) {
  const fs::path src = test::model_dir("stories260K");
  fs::create_directories(dst);
  for (const char* name : {"config.json", "model.safetensors", "tokenizer.model"}) {
    fs::copy_file(src / name, dst / name);
    fs::permissions(dst / name, fs::perms::owner_read | fs::perms::owner_write);
  }
  return dst;
}

// Flips one byte and moves the mtime forward so the change is visible even on coarse clocks.
void flip_byte(const fs::path& file, size_t offset) {
  std::string bytes = read_text(file);
  const auto mtime = fs::last_write_time(file);
  bytes[offset] = static_cast<char>(bytes[offset] ^ 0x5A);
  write_text(file, bytes);
  fs::last_write_time(file, mtime + std::chrono::seconds(2));
}

TEST(ModelHash, StableAndEqualToSha256sumManifest) {
  const fs::path model = test::model_dir("stories260K");
  Result<std::string> h1 = model_content_hash(model);
  Result<std::string> h2 = model_content_hash(model);
  ASSERT_TRUE(h1.is_ok()) << h1.status().message();
  EXPECT_EQ(*h1, *h2);
  EXPECT_EQ(h1->size(), 64u);
  std::string manifest = *sha256_file(model / "config.json") + "  config.json\n" +
                         *sha256_file(model / "model.safetensors") + "  model.safetensors\n";
  EXPECT_EQ(*h1, sha256_hex(manifest));

  // The documented shell equivalent, when coreutils is there to run it.
  const std::string cmd = "cd '" + model.string() + "' && LC_ALL=C sha256sum config.json *.safetensors | sha256sum";
  if (std::FILE* p = popen(cmd.c_str(), "r")) {
    std::array<char, 65> out{};
    size_t n = std::fread(out.data(), 1, 64, p);
    if (pclose(p) == 0 && n == 64) {
      EXPECT_EQ(*h1, std::string(out.data(), 64));
    }
  }
}

TEST(ModelHash, ChangesWhenACopiedFileChanges) {
  TempDir dir("model-hash");
  const fs::path copy = copy_model(dir.path() / "m");
  Result<std::string> original = model_content_hash(test::model_dir("stories260K"));
  Result<std::string> copied = model_content_hash(copy);
  ASSERT_TRUE(original.is_ok() && copied.is_ok());
  EXPECT_EQ(*copied, *original);  // content, not path

  write_text(copy / "tokenizer.model", "not part of the hash");
  EXPECT_EQ(*model_content_hash(copy), *original);

  flip_byte(copy / "model.safetensors", 600000);
  Result<std::string> weights_changed = model_content_hash(copy);
  EXPECT_NE(*weights_changed, *original);

  flip_byte(copy / "config.json", 10);
  EXPECT_NE(*model_content_hash(copy), *weights_changed);
}

TEST(ModelHash, ErrorsNameTheDirectory) {
  TempDir dir("model-hash");
  Result<std::string> missing = model_content_hash(dir.path() / "absent");
  ASSERT_FALSE(missing.is_ok());
  EXPECT_NE(missing.status().message().find("absent"), std::string::npos);

  write_text(dir.path() / "model.safetensors", "x");
  Result<std::string> no_config = model_content_hash(dir.path());
  ASSERT_FALSE(no_config.is_ok());
  EXPECT_NE(no_config.status().message().find("config.json"), std::string::npos) << no_config.status().message();

  fs::remove(dir.path() / "model.safetensors");
  write_text(dir.path() / "config.json", "{}");
  Result<std::string> no_weights = model_content_hash(dir.path());
  ASSERT_FALSE(no_weights.is_ok());
  EXPECT_NE(no_weights.status().message().find("safetensors"), std::string::npos);
}

TEST(ModelHash, StoreCachesPerFileHashesUntilAFileChanges) {
  TempDir dir("hash-cache");
  const fs::path copy = copy_model(dir.path() / "m");
  const fs::path db = dir.path() / "runs.db";
  auto store = RunStore::open(db);
  ASSERT_TRUE(store.is_ok());
  Result<std::string> h = store->model_content_hash(copy);
  ASSERT_TRUE(h.is_ok()) << h.status().message();
  EXPECT_EQ(*h, *model_content_hash(copy));
  EXPECT_EQ(store->files_hashed(), 2);
  EXPECT_EQ(sql_count(db, "SELECT COUNT(*) FROM hash_cache"), 2);

  EXPECT_EQ(*store->model_content_hash(copy), *h);
  EXPECT_EQ(store->files_hashed(), 2);  // both served from the cache

  auto other = RunStore::open(db);  // the cache lives in the file, not the object
  EXPECT_EQ(*other->model_content_hash(copy), *h);
  EXPECT_EQ(other->files_hashed(), 0);

  flip_byte(copy / "model.safetensors", 1000);
  Result<std::string> changed = store->model_content_hash(copy);
  EXPECT_EQ(store->files_hashed(), 3);  // only the changed file is re-read
  EXPECT_NE(*changed, *h);
  EXPECT_EQ(*changed, *model_content_hash(copy));
  EXPECT_EQ(sql_count(db, "SELECT COUNT(*) FROM hash_cache"), 2);
}

// ---- host ----

TEST(Hardware, DescribesThisHost) {
  HardwareInfo hw = detect_hardware();
  EXPECT_EQ(hw.cores, static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN)));
  EXPECT_GT(hw.memory_bytes, int64_t{64} << 20);
  EXPECT_EQ(hw.os.rfind("Linux ", 0), 0u) << hw.os;
  EXPECT_FALSE(hw.cpu_model.empty());
  json j = to_json(hw);
  EXPECT_EQ(j["cores"], hw.cores);
  EXPECT_EQ(j["memory_bytes"], hw.memory_bytes);
  EXPECT_TRUE(j["gpus"].is_array());
}

TEST(Hardware, ResidentSetSizes) {
  std::vector<char> block(size_t{32} << 20, 1);  // touch 32 MiB so the RSS has something to show
  int64_t now = current_rss_bytes();
  int64_t peak = peak_rss_bytes();
  EXPECT_GT(now, int64_t{32} << 20);
  EXPECT_GE(peak, now);
  EXPECT_EQ(block[block.size() - 1], 1);
}

}  // namespace
}  // namespace compactor
