// Atomic file and directory writes (temp sibling + fsync + rename). See atomic_file.h.
#include "io/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <system_error>
#include <vector>

namespace compactor {

namespace fs = std::filesystem;

namespace {

std::string errno_text() { return std::strerror(errno); }

// mkstemp/mkdtemp need a mutable, NUL-terminated template: "TARGET<suffix>XXXXXX".
std::vector<char> temp_template(const fs::path& target, const char* suffix) {
  std::string s = target.string() + suffix + "XXXXXX";
  std::vector<char> v(s.begin(), s.end());
  v.push_back('\0');
  return v;
}

// Makes a rename durable: fsync the directory that holds the new name. Best effort (some file
// systems refuse fsync on directories), so failures are ignored.
void sync_parent(const fs::path& path) {
  fs::path parent = path.parent_path();
  if (parent.empty()) parent = ".";
  int fd = ::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  (void)::fsync(fd);
  ::close(fd);
}

bool is_empty_directory(const fs::path& p) {
  std::error_code ec;
  return fs::is_directory(p, ec) && fs::is_empty(p, ec) && !ec;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// AtomicFile

Result<AtomicFile> AtomicFile::create(const fs::path& path) {
  if (path.filename().empty()) return invalid_argument("cannot write '{}': not a file name", path.string());
  std::vector<char> tmpl = temp_template(path, ".tmp-");
  int fd = ::mkstemp(tmpl.data());
  if (fd < 0) return io_error("cannot create a temporary file next to '{}': {}", path.string(), errno_text());
  // mkstemp creates 0600; written files should be readable like any other output.
  (void)::fchmod(fd, 0644);
  return AtomicFile(path, fs::path(tmpl.data()), fd);
}

AtomicFile::AtomicFile(AtomicFile&& other) noexcept
    : target_(std::move(other.target_)), temp_(std::move(other.temp_)), fd_(other.fd_) {
  other.fd_ = -1;
  other.temp_.clear();
}

AtomicFile& AtomicFile::operator=(AtomicFile&& other) noexcept {
  if (this != &other) {
    abandon();
    target_ = std::move(other.target_);
    temp_ = std::move(other.temp_);
    fd_ = other.fd_;
    other.fd_ = -1;
    other.temp_.clear();
  }
  return *this;
}

AtomicFile::~AtomicFile() { abandon(); }

void AtomicFile::abandon() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  if (!temp_.empty()) ::unlink(temp_.c_str());
  temp_.clear();
}

Status AtomicFile::write(const void* data, size_t bytes) {
  if (fd_ < 0) return io_error("writing '{}': the file is already committed or abandoned", target_.string());
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    ssize_t n = ::write(fd_, p, bytes);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      Status st = io_error("writing '{}': {}", temp_.string(), n < 0 ? errno_text() : "no progress");
      abandon();
      return st;
    }
    p += n;
    bytes -= static_cast<size_t>(n);
  }
  return Status::ok();
}

Status AtomicFile::commit() {
  if (fd_ < 0) return io_error("committing '{}': the file is already committed or abandoned", target_.string());
  if (::fsync(fd_) != 0) {
    Status st = io_error("fsync of '{}' failed: {}", temp_.string(), errno_text());
    abandon();
    return st;
  }
  int rc = ::close(fd_);
  fd_ = -1;
  if (rc != 0) {
    Status st = io_error("closing '{}' failed: {}", temp_.string(), errno_text());
    abandon();
    return st;
  }
  if (::rename(temp_.c_str(), target_.c_str()) != 0) {
    Status st = io_error("renaming '{}' to '{}' failed: {}", temp_.string(), target_.string(), errno_text());
    abandon();
    return st;
  }
  temp_.clear();
  sync_parent(target_);
  return Status::ok();
}

Status write_file_atomic(const fs::path& path, std::string_view bytes) {
  ASSIGN_OR_RETURN(AtomicFile file, AtomicFile::create(path));
  RETURN_IF_ERROR(file.write(bytes.data(), bytes.size()));
  return file.commit();
}

// ---------------------------------------------------------------------------------------------
// AtomicDirectory

Result<AtomicDirectory> AtomicDirectory::create(const fs::path& out, Overwrite overwrite) {
  fs::path target = out.filename().empty() ? out.parent_path() : out;  // "dir/" -> "dir"
  if (target.empty()) return invalid_argument("output directory path is empty");
  std::error_code ec;
  if (overwrite == Overwrite::kNo && fs::exists(target, ec) && !is_empty_directory(target))
    return invalid_argument("output '{}' already exists and is not an empty directory (refusing to overwrite)",
                            target.string());
  if (!target.parent_path().empty()) {
    fs::create_directories(target.parent_path(), ec);
    if (ec) return io_error("cannot create '{}': {}", target.parent_path().string(), ec.message());
  }
  std::vector<char> tmpl = temp_template(target, ".tmp-");
  if (::mkdtemp(tmpl.data()) == nullptr)
    return io_error("cannot create a temporary directory next to '{}': {}", target.string(), errno_text());
  return AtomicDirectory(target, fs::path(tmpl.data()), overwrite);
}

AtomicDirectory::AtomicDirectory(AtomicDirectory&& other) noexcept
    : target_(std::move(other.target_)), temp_(std::move(other.temp_)), overwrite_(other.overwrite_) {
  other.temp_.clear();
}

AtomicDirectory& AtomicDirectory::operator=(AtomicDirectory&& other) noexcept {
  if (this != &other) {
    abandon();
    target_ = std::move(other.target_);
    temp_ = std::move(other.temp_);
    overwrite_ = other.overwrite_;
    other.temp_.clear();
  }
  return *this;
}

AtomicDirectory::~AtomicDirectory() { abandon(); }

void AtomicDirectory::abandon() {
  if (temp_.empty()) return;
  std::error_code ec;
  fs::remove_all(temp_, ec);
  temp_.clear();
}

namespace {
// Moves an existing OUT aside (to a fresh `OUT.old-XXXXXX`), so the new directory can take its
// name; returns the aside path, empty when OUT did not exist.
Result<fs::path> move_aside(const fs::path& target) {
  std::error_code ec;
  if (!fs::exists(fs::symlink_status(target, ec))) return fs::path();
  if (!fs::is_directory(fs::symlink_status(target, ec))) {
    if (!fs::remove(target, ec) || ec)
      return io_error("cannot remove existing '{}': {}", target.string(), ec.message());
    return fs::path();
  }
  std::vector<char> tmpl = temp_template(target, ".old-");
  if (::mkdtemp(tmpl.data()) == nullptr)
    return io_error("cannot move existing '{}' aside: {}", target.string(), errno_text());
  fs::path aside(tmpl.data());
  // rename() replaces the empty placeholder directory made by mkdtemp.
  if (::rename(target.c_str(), aside.c_str()) != 0) {
    Status st = io_error("cannot move existing '{}' aside: {}", target.string(), errno_text());
    fs::remove(aside, ec);
    return st;
  }
  return aside;
}
}  // namespace

Status AtomicDirectory::commit() {
  if (temp_.empty())
    return io_error("committing '{}': the directory is already committed or abandoned", target_.string());
  std::error_code ec;
  bool occupied = fs::exists(fs::symlink_status(target_, ec)) && !is_empty_directory(target_);
  if (occupied && overwrite_ == Overwrite::kNo) {
    abandon();
    return invalid_argument("output '{}' already exists and is not an empty directory (refusing to overwrite)",
                            target_.string());
  }
  ::chmod(temp_.c_str(), 0755);  // mkdtemp creates 0700
  auto aside = move_aside(target_);
  if (!aside.is_ok()) {
    abandon();
    return aside.status();
  }
  if (::rename(temp_.c_str(), target_.c_str()) != 0) {
    Status st = io_error("renaming '{}' to '{}' failed: {}", temp_.string(), target_.string(), errno_text());
    if (!aside->empty()) (void)::rename(aside->c_str(), target_.c_str());
    abandon();
    return st;
  }
  temp_.clear();
  if (!aside->empty()) fs::remove_all(*aside, ec);
  sync_parent(target_);
  return Status::ok();
}

}  // namespace compactor
