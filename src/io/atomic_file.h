// Atomic file and directory writes: data goes to a temporary sibling (`NAME.tmp-XXXXXX`), is
// fsync'ed, then renamed over the target, so an interrupted run never leaves a half-written file
// or model directory behind (DESIGN.md, "Writes are atomic").
// Test: build-*/tests/test_text_file (AtomicFile / AtomicDirectory cases).
#pragma once

#include <cstddef>
#include <filesystem>
#include <string_view>

#include "core/status.h"

namespace compactor {

enum class Overwrite { kNo, kYes };

// Streams bytes into `path.tmp-XXXXXX`; commit() fsyncs and renames it to `path`. Destroying an
// uncommitted AtomicFile removes the temporary file.
class AtomicFile {
 public:
  static Result<AtomicFile> create(const std::filesystem::path& path);
  AtomicFile(AtomicFile&& other) noexcept;
  AtomicFile& operator=(AtomicFile&& other) noexcept;
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  ~AtomicFile();

  Status write(const void* data, size_t bytes);  // data: [bytes] u8
  Status commit();
  const std::filesystem::path& temp_path() const { return temp_; }
  const std::filesystem::path& target() const { return target_; }

 private:
  AtomicFile(std::filesystem::path target, std::filesystem::path temp, int fd)
      : target_(std::move(target)), temp_(std::move(temp)), fd_(fd) {}
  void abandon();

  std::filesystem::path target_;
  std::filesystem::path temp_;
  int fd_ = -1;
};

// Writes `bytes` to `path` atomically (temp file, fsync, rename).
Status write_file_atomic(const std::filesystem::path& path, std::string_view bytes);

// A directory built as `OUT.tmp-XXXXXX/` and renamed to OUT by commit(). commit() fails when OUT
// exists and is not an empty directory, unless created with Overwrite::kYes (then OUT is replaced).
// Destroying an uncommitted AtomicDirectory removes the temporary directory and its contents.
class AtomicDirectory {
 public:
  static Result<AtomicDirectory> create(const std::filesystem::path& out, Overwrite overwrite = Overwrite::kNo);
  AtomicDirectory(AtomicDirectory&& other) noexcept;
  AtomicDirectory& operator=(AtomicDirectory&& other) noexcept;
  AtomicDirectory(const AtomicDirectory&) = delete;
  AtomicDirectory& operator=(const AtomicDirectory&) = delete;
  ~AtomicDirectory();

  // Where the caller writes the directory's files until commit().
  const std::filesystem::path& path() const { return temp_; }
  const std::filesystem::path& target() const { return target_; }
  Status commit();

 private:
  AtomicDirectory(std::filesystem::path target, std::filesystem::path temp, Overwrite overwrite)
      : target_(std::move(target)), temp_(std::move(temp)), overwrite_(overwrite) {}
  void abandon();

  std::filesystem::path target_;
  std::filesystem::path temp_;
  Overwrite overwrite_ = Overwrite::kNo;
};

}  // namespace compactor
