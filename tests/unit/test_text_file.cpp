// Text files, SHA-256, JSONL fields, and atomic file/directory writes (commit and abandon paths).
// Run: build-*/tests/test_text_file
#include <gtest/gtest.h>

#include <fstream>

#include "io/atomic_file.h"
#include "io/text_file.h"
#include "support/fixtures.h"

namespace compactor {
namespace {

namespace fs = std::filesystem;

void write_bytes(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Names in `dir` that contain `part` (temp or aside leftovers).
std::vector<std::string> entries_with(const fs::path& dir, const std::string& part) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().find(part) != std::string::npos) out.push_back(e.path().filename());
  return out;
}

class IoFilesTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = test::make_temp_dir("compactor-files"); }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST(Sha256, KnownDigests) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Sha256, WikiTextTestFile) {
  auto h = sha256_file(test::shared_dir() / "data/wikitext2/wiki.test.raw");
  ASSERT_TRUE(h.is_ok()) << h.status().message();
  EXPECT_EQ(*h, "173c87a53759e0201f33e0ccf978e510c2042d7f2cb78229d9a50d79b9e7dd08");
  auto text = read_text_file(test::shared_dir() / "data/wikitext2/wiki.test.raw");
  ASSERT_TRUE(text.is_ok());
  EXPECT_EQ(sha256_hex(*text), *h) << "streamed and in-memory digests must agree";
}

TEST_F(IoFilesTest, ReadTextFileErrors) {
  write_bytes(dir_ / "a.txt", std::string("line1\n\0line2", 12));
  auto r = read_text_file(dir_ / "a.txt");
  ASSERT_TRUE(r.is_ok());
  EXPECT_EQ(r->size(), 12u) << "bytes come back unchanged, NULs included";
  write_bytes(dir_ / "empty.txt", "");
  r = read_text_file(dir_ / "empty.txt");
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find((dir_ / "empty.txt").string() + "' is empty"), std::string::npos)
      << r.status().message();
  r = read_text_file(dir_ / "missing.txt");
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_NE(r.status().message().find("missing.txt"), std::string::npos);
  r = read_text_file(dir_);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("is a directory"), std::string::npos) << r.status().message();
  EXPECT_FALSE(sha256_file(dir_ / "missing.txt").is_ok());
  EXPECT_EQ(*sha256_file(dir_ / "empty.txt"), sha256_hex(""));
}

TEST(Jsonl, C4Demo) {
  auto r = read_jsonl_field(test::shared_dir() / "data/calibration/c4_demo.jsonl", "text");
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  EXPECT_EQ(r->size(), 300u);
  for (const std::string& s : *r) EXPECT_FALSE(s.empty());
  EXPECT_EQ(r->front().rfind("Don\xE2\x80\x99t think you need", 0), 0u) << r->front().substr(0, 40);
}

TEST_F(IoFilesTest, JsonlErrorsNameFileAndLine) {
  fs::path p = dir_ / "d.jsonl";
  write_bytes(p, "{\"text\": \"a\"}\n\n  \r\n{\"text\": \"b\", \"n\": 1}\n");
  auto r = read_jsonl_field(p, "text");
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  EXPECT_EQ(*r, (std::vector<std::string>{"a", "b"}));
  const std::pair<std::string, std::string> cases[] = {
      {"{\"text\": \"a\"}\n{\"text\": \"b\"\n", ":2: not valid JSON"},
      {"{\"text\": \"a\"}\n[1]\n", ":2: expected a JSON object"},
      {"{\"text\": \"a\"}\n{\"text\": \"a\"}\n{\"other\": 1}\n", ":3: no field 'text'"},
      {"{\"text\": 5}\n", ":1: field 'text' must be a string"},
      {"\n\n", "has no JSON lines"},
  };
  for (const auto& [content, expected] : cases) {
    write_bytes(p, content);
    r = read_jsonl_field(p, "text");
    ASSERT_FALSE(r.is_ok()) << content;
    EXPECT_NE(r.status().message().find(p.string()), std::string::npos) << r.status().message();
    EXPECT_NE(r.status().message().find(expected), std::string::npos) << r.status().message();
  }
}

TEST_F(IoFilesTest, WriteFileAtomic) {
  fs::path p = dir_ / "out.json";
  ASSERT_TRUE(write_file_atomic(p, "first").is_ok());
  ASSERT_TRUE(write_file_atomic(p, "second").is_ok());
  EXPECT_EQ(*read_text_file(p), "second");
  EXPECT_TRUE(entries_with(dir_, ".tmp-").empty());
  EXPECT_EQ(fs::status(p).permissions() & fs::perms::others_read, fs::perms::others_read);
  Status st = write_file_atomic(dir_ / "no" / "such" / "f.txt", "x");
  EXPECT_EQ(st.code(), StatusCode::kIoError);
  EXPECT_NE(st.message().find("f.txt"), std::string::npos) << st.message();
}

TEST_F(IoFilesTest, AtomicFileAbandoned) {
  fs::path p = dir_ / "half.bin";
  {
    auto f = AtomicFile::create(p);
    ASSERT_TRUE(f.is_ok()) << f.status().message();
    ASSERT_TRUE(f->write("abc", 3).is_ok());
    EXPECT_TRUE(fs::exists(f->temp_path()));
    EXPECT_FALSE(fs::exists(p)) << "nothing appears under the real name before commit";
  }
  EXPECT_FALSE(fs::exists(p));
  EXPECT_TRUE(entries_with(dir_, ".tmp-").empty());
  auto f = AtomicFile::create(p);
  ASSERT_TRUE(f.is_ok());
  ASSERT_TRUE(f->commit().is_ok());
  EXPECT_FALSE(f->commit().is_ok()) << "a second commit is an error";
  EXPECT_FALSE(f->write("x", 1).is_ok());
}

TEST_F(IoFilesTest, AtomicDirectoryCommit) {
  fs::path out = dir_ / "nested" / "model-w4";
  auto d = AtomicDirectory::create(out);
  ASSERT_TRUE(d.is_ok()) << d.status().message();
  EXPECT_NE(d->path(), out);
  ASSERT_TRUE(write_file_atomic(d->path() / "config.json", "{}").is_ok());
  ASSERT_TRUE(write_file_atomic(d->path() / "model.safetensors", "weights").is_ok());
  EXPECT_FALSE(fs::exists(out)) << "the output appears only at commit";
  Status st = d->commit();
  ASSERT_TRUE(st.is_ok()) << st.message();
  EXPECT_EQ(*read_text_file(out / "config.json"), "{}");
  EXPECT_EQ(*read_text_file(out / "model.safetensors"), "weights");
  EXPECT_TRUE(entries_with(dir_ / "nested", ".tmp-").empty());
  EXPECT_EQ(fs::status(out).permissions() & fs::perms::others_exec, fs::perms::others_exec);
}

TEST_F(IoFilesTest, AtomicDirectoryAbandoned) {
  fs::path out = dir_ / "model-w4";
  {
    auto d = AtomicDirectory::create(out);
    ASSERT_TRUE(d.is_ok());
    ASSERT_TRUE(write_file_atomic(d->path() / "model.safetensors", "half").is_ok());
    fs::create_directories(d->path() / "sub");
    EXPECT_EQ(entries_with(dir_, ".tmp-").size(), 1u);
  }  // e.g. an error return before commit()
  EXPECT_FALSE(fs::exists(out));
  EXPECT_TRUE(entries_with(dir_, ".tmp-").empty());
}

TEST_F(IoFilesTest, AtomicDirectoryExistingTarget) {
  fs::path out = dir_ / "out";
  fs::create_directories(out);
  {  // an existing empty directory is fine
    auto d = AtomicDirectory::create(out);
    ASSERT_TRUE(d.is_ok()) << d.status().message();
    ASSERT_TRUE(write_file_atomic(d->path() / "a", "1").is_ok());
    ASSERT_TRUE(d->commit().is_ok());
  }
  auto refused = AtomicDirectory::create(out);
  ASSERT_FALSE(refused.is_ok());
  EXPECT_NE(refused.status().message().find(out.string()), std::string::npos);
  EXPECT_NE(refused.status().message().find("not an empty directory"), std::string::npos);

  auto d = AtomicDirectory::create(out, Overwrite::kYes);
  ASSERT_TRUE(d.is_ok()) << d.status().message();
  ASSERT_TRUE(write_file_atomic(d->path() / "b", "2").is_ok());
  ASSERT_TRUE(d->commit().is_ok());
  EXPECT_FALSE(fs::exists(out / "a")) << "overwrite replaces the whole directory";
  EXPECT_EQ(*read_text_file(out / "b"), "2");
  EXPECT_TRUE(entries_with(dir_, ".old-").empty());
  EXPECT_TRUE(entries_with(dir_, ".tmp-").empty());
}

TEST_F(IoFilesTest, AtomicDirectoryTargetAppearsBeforeCommit) {
  fs::path out = dir_ / "race";
  auto d = AtomicDirectory::create(out);
  ASSERT_TRUE(d.is_ok());
  ASSERT_TRUE(write_file_atomic(d->path() / "mine", "1").is_ok());
  fs::create_directories(out);
  write_bytes(out / "theirs", "2");
  Status st = d->commit();
  ASSERT_FALSE(st.is_ok());
  EXPECT_NE(st.message().find("refusing to overwrite"), std::string::npos) << st.message();
  EXPECT_EQ(*read_text_file(out / "theirs"), "2");
  EXPECT_FALSE(fs::exists(out / "mine"));
  EXPECT_TRUE(entries_with(dir_, ".tmp-").empty());
}

}  // namespace
}  // namespace compactor
