// safetensors reader (mmap + validated header), model weight directories, atomic writer.
// See safetensors.h for the format. Every error names the file, the tensor and what was expected.
#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "io/atomic_file.h"
#include "io/text_file.h"

namespace compactor {

namespace fs = std::filesystem;
using nlohmann::json;

View TensorEntry::view() const {
  View v;
  v.data = const_cast<std::byte*>(data);  // the mapping is PROT_READ: views are read-only by contract
  v.shape = shape;
  v.dtype = dtype;
  v.device = Device::kCpu;
  return v;
}

// ---------------------------------------------------------------------------------------------
// Header parsing

namespace {

std::string supported_dtypes() {
  std::string s;
  for (const auto& row : kDTypeTable) s += (s.empty() ? "" : ", ") + std::string(row.safetensors);
  return s;
}

uint64_t read_u64_le(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// Parses "shape": a list of at most kMaxDims non-negative integers whose product fits in int64.
Status parse_shape(const json& j, const std::string& where, Shape* out) {
  if (!j.is_array()) return corrupt("{}: 'shape' must be a list of integers, got {}", where, j.type_name());
  if (j.size() > static_cast<size_t>(kMaxDims))
    return unsupported("{}: shape has {} dimensions; at most {} are supported", where, j.size(), kMaxDims);
  Shape s;
  int64_t numel = 1;
  for (const json& d : j) {
    if (d.is_number_integer() && !d.is_number_unsigned())
      return corrupt("{}: shape has a negative dimension {}", where, d.get<int64_t>());
    if (!d.is_number_unsigned()) return corrupt("{}: shape entries must be integers, got {}", where, d.type_name());
    uint64_t v = d.get<uint64_t>();
    if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
        __builtin_mul_overflow(numel, static_cast<int64_t>(v), &numel))
      return corrupt("{}: shape {} overflows a 64-bit element count", where, j.dump());
    s.dims[s.ndim++] = static_cast<int64_t>(v);
  }
  *out = s;
  return Status::ok();
}

Status parse_offsets(const json& j, const std::string& where, uint64_t data_size, uint64_t* begin, uint64_t* end) {
  if (!j.is_array() || j.size() != 2 || !j[0].is_number_unsigned() || !j[1].is_number_unsigned())
    return corrupt("{}: 'data_offsets' must be [begin, end] with non-negative integers, got {}", where, j.dump());
  *begin = j[0].get<uint64_t>();
  *end = j[1].get<uint64_t>();
  if (*begin > *end) return corrupt("{}: data_offsets [{}, {}] has begin > end", where, *begin, *end);
  if (*end > data_size)
    return corrupt("{}: data_offsets [{}, {}] run past the data section ({} bytes)", where, *begin, *end, data_size);
  return Status::ok();
}

Result<TensorEntry> parse_entry(const std::string& name, const json& j, const std::string& file, uint64_t data_size) {
  std::string where = fmt::format("{}: tensor '{}'", file, name);
  if (!j.is_object()) return corrupt("{}: header entry must be an object, got {}", where, j.type_name());
  for (const char* key : {"dtype", "shape", "data_offsets"})
    if (!j.contains(key)) return corrupt("{}: header entry has no '{}'", where, key);
  const json& dt = j["dtype"];
  if (!dt.is_string()) return corrupt("{}: 'dtype' must be a string, got {}", where, dt.type_name());
  TensorEntry e;
  e.name = name;
  if (!dtype_from_safetensors(dt.get<std::string>(), &e.dtype))
    return unsupported("{}: dtype '{}' is not supported; expected one of {}", where, dt.get<std::string>(),
                       supported_dtypes());
  RETURN_IF_ERROR(parse_shape(j["shape"], where, &e.shape));
  RETURN_IF_ERROR(parse_offsets(j["data_offsets"], where, data_size, &e.begin, &e.end));
  int64_t expected = 0;
  if (__builtin_mul_overflow(e.shape.numel(), static_cast<int64_t>(dtype_size(e.dtype)), &expected))
    return corrupt("{}: shape {} overflows a 64-bit byte count", where, e.shape.str());
  if (e.bytes() != static_cast<uint64_t>(expected))
    return corrupt("{}: data_offsets span {} bytes but shape {} of {} needs {}", where, e.bytes(), e.shape.str(),
                   dtype_name(e.dtype), expected);
  return e;
}

Status parse_metadata(const json& j, const std::string& file, std::map<std::string, std::string>* out) {
  if (!j.is_object()) return corrupt("{}: '__metadata__' must be an object of strings, got {}", file, j.type_name());
  for (const auto& [k, v] : j.items()) {
    if (!v.is_string())
      return corrupt("{}: '__metadata__' value of '{}' must be a string, got {}", file, k, v.type_name());
    (*out)[k] = v.get<std::string>();
  }
  return Status::ok();
}

// Tensors sorted by offset must not share bytes (empty tensors share nothing).
Status check_overlaps(const std::vector<TensorEntry>& sorted, const std::string& file) {
  const TensorEntry* prev = nullptr;
  for (const TensorEntry& e : sorted) {
    if (e.bytes() == 0) continue;
    if (prev != nullptr && e.begin < prev->end)
      return corrupt("{}: tensors '{}' [{}, {}) and '{}' [{}, {}) overlap", file, prev->name, prev->begin, prev->end,
                     e.name, e.begin, e.end);
    prev = &e;
  }
  return Status::ok();
}

int advice_flag(MapAdvice a) {
  switch (a) {
    case MapAdvice::kWillNeed:
      return MADV_WILLNEED;
    case MapAdvice::kSequential:
      return MADV_SEQUENTIAL;
    case MapAdvice::kDontNeed:
      return MADV_DONTNEED;
    case MapAdvice::kNormal:
      break;
  }
  return MADV_NORMAL;
}

// Maps `path` read-only; `*size` receives its length.
Result<void*> map_file(const fs::path& path, uint64_t* size) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return not_found("'{}' does not exist", path.string());
    return io_error("cannot open '{}': {}", path.string(), std::strerror(errno));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return io_error("'{}' is not a regular file", path.string());
  }
  *size = static_cast<uint64_t>(st.st_size);
  if (*size < 8) {
    ::close(fd);
    return corrupt("'{}' is {} bytes; a safetensors file starts with an 8-byte header length", path.string(), *size);
  }
  void* p = ::mmap(nullptr, *size, PROT_READ, MAP_PRIVATE, fd, 0);
  int mmap_errno = errno;
  ::close(fd);
  if (p == MAP_FAILED) return io_error("cannot mmap '{}': {}", path.string(), std::strerror(mmap_errno));
  return p;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// SafetensorsFile

Result<std::shared_ptr<SafetensorsFile>> SafetensorsFile::open(const fs::path& path) {
  std::shared_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  ASSIGN_OR_RETURN(f->map_, map_file(path, &f->size_));
  ::madvise(f->map_, f->size_, MADV_WILLNEED);
  const auto* base = static_cast<const unsigned char*>(f->map_);
  uint64_t n = read_u64_le(base);
  if (n > kMaxSafetensorsHeader)
    return corrupt("'{}': header length {} is absurd (limit {}); not a safetensors file?", path.string(), n,
                   kMaxSafetensorsHeader);
  if (n > f->size_ - 8)
    return corrupt("'{}': header length {} runs past the end of the file ({} bytes)", path.string(), n, f->size_);
  f->data_start_ = 8 + n;
  RETURN_IF_ERROR(f->parse_header(std::string_view(reinterpret_cast<const char*>(base + 8), n)));
  return f;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) ::munmap(map_, size_);
}

Status SafetensorsFile::parse_header(std::string_view header) {
  const std::string file = path_.string();
  // nlohmann stops at a NUL byte as if the input ended; the format allows none.
  if (size_t nul = header.find('\0'); nul != std::string_view::npos)
    return corrupt("'{}': the header has a NUL byte at offset {}; expected JSON text", file, 8 + nul);
  try {
    json j = json::parse(header.begin(), header.end(), nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) return corrupt("'{}': the {}-byte header is not valid JSON", file, header.size());
    if (!j.is_object()) return corrupt("'{}': the header must be a JSON object, got {}", file, j.type_name());
    const uint64_t data_size = size_ - data_start_;
    const auto* data = static_cast<const std::byte*>(map_) + data_start_;
    for (const auto& [key, val] : j.items()) {
      if (key == "__metadata__") {
        RETURN_IF_ERROR(parse_metadata(val, file, &metadata_));
        continue;
      }
      ASSIGN_OR_RETURN(TensorEntry e, parse_entry(key, val, file, data_size));
      e.data = data + e.begin;
      tensors_.push_back(std::move(e));
    }
  } catch (const std::exception& ex) {
    return corrupt("'{}': cannot read the header: {}", file, ex.what());
  }
  std::sort(tensors_.begin(), tensors_.end(), [](const TensorEntry& a, const TensorEntry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  RETURN_IF_ERROR(check_overlaps(tensors_, file));
  for (size_t i = 0; i < tensors_.size(); ++i) index_.emplace(tensors_[i].name, i);
  return Status::ok();
}

std::vector<std::string> SafetensorsFile::tensor_names() const {
  std::vector<std::string> names;
  names.reserve(tensors_.size());
  for (const auto& e : tensors_) names.push_back(e.name);
  return names;
}

const TensorEntry* SafetensorsFile::find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

void SafetensorsFile::advise(const TensorEntry& entry, MapAdvice advice) const {
  if (entry.bytes() == 0) return;
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  uint64_t begin = (data_start_ + entry.begin) / page * page;
  uint64_t end = data_start_ + entry.end;
  ::madvise(static_cast<char*>(map_) + begin, end - begin, advice_flag(advice));
}

// ---------------------------------------------------------------------------------------------
// WeightFiles

namespace {

constexpr const char* kSingleFile = "model.safetensors";
constexpr const char* kIndexFile = "model.safetensors.index.json";

// Reads the index's weight_map: shard file -> names it should hold.
Result<std::map<std::string, std::vector<std::string>>> read_index(const fs::path& index_path) {
  ASSIGN_OR_RETURN(std::string text, read_text_file(index_path));
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return corrupt("'{}' is not a JSON object", index_path.string());
  auto wm = j.find("weight_map");
  if (wm == j.end() || !wm->is_object() || wm->empty())
    return corrupt("'{}' has no 'weight_map' object (tensor name -> shard file)", index_path.string());
  std::map<std::string, std::vector<std::string>> shards;
  for (const auto& [name, file] : wm->items()) {
    if (!file.is_string())
      return corrupt("'{}': weight_map entry '{}' must be a file name string", index_path.string(), name);
    std::string f = file.get<std::string>();
    if (f.empty() || f.find('/') != std::string::npos || f == "." || f == "..")
      return corrupt("'{}': weight_map entry '{}' names '{}'; expected a file in the same directory",
                     index_path.string(), name, f);
    shards[f].push_back(name);
  }
  return shards;
}

}  // namespace

Status WeightFiles::add_file(std::shared_ptr<SafetensorsFile> file) {
  const size_t idx = files_.size();
  for (const TensorEntry& e : file->tensors()) {
    auto [it, inserted] = entries_.emplace(e.name, Slot{&e, idx});
    if (!inserted)
      return corrupt("tensor '{}' appears in both '{}' and '{}'", e.name, files_[it->second.file]->path().string(),
                     file->path().string());
  }
  files_.push_back(std::move(file));
  return Status::ok();
}

Result<WeightFiles> WeightFiles::open(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return not_found("model directory '{}' does not exist", dir.string());
  WeightFiles w;
  w.dir_ = dir;
  if (fs::exists(dir / kSingleFile, ec)) {
    ASSIGN_OR_RETURN(auto file, SafetensorsFile::open(dir / kSingleFile));
    RETURN_IF_ERROR(w.add_file(std::move(file)));
    return w;
  }
  const fs::path index_path = dir / kIndexFile;
  if (!fs::exists(index_path, ec))
    return not_found("'{}' has neither {} nor {}", dir.string(), kSingleFile, kIndexFile);
  ASSIGN_OR_RETURN(auto shards, read_index(index_path));
  for (const auto& [shard, names] : shards) {
    auto opened = SafetensorsFile::open(dir / shard);
    if (!opened.is_ok())
      return opened.status().with_context(
          fmt::format("{}: shard '{}' (holds '{}')", index_path.string(), shard, names[0]));
    for (const std::string& name : names)
      if (opened.value()->find(name) == nullptr)
        return not_found("{}: tensor '{}' is mapped to shard '{}', which does not contain it", index_path.string(),
                         name, shard);
    RETURN_IF_ERROR(w.add_file(std::move(opened).value()));
  }
  return w;
}

const TensorEntry* WeightFiles::find(std::string_view name) const {
  auto it = entries_.find(name);
  return it == entries_.end() ? nullptr : it->second.entry;
}

const SafetensorsFile* WeightFiles::file_of(std::string_view name) const {
  auto it = entries_.find(name);
  return it == entries_.end() ? nullptr : files_[it->second.file].get();
}

std::vector<std::string> WeightFiles::names() const {
  std::vector<std::string> out;
  out.reserve(entries_.size());
  for (const auto& [name, slot] : entries_) out.push_back(name);
  return out;
}

int64_t WeightFiles::total_bytes() const {
  int64_t n = 0;
  for (const auto& [name, slot] : entries_) n += static_cast<int64_t>(slot.entry->bytes());
  return n;
}

int64_t WeightFiles::total_elements() const {
  int64_t n = 0;
  for (const auto& [name, slot] : entries_) n += slot.entry->shape.numel();
  return n;
}

std::map<DType, DTypeTotals> WeightFiles::dtype_totals() const {
  std::map<DType, DTypeTotals> out;
  for (const auto& [name, slot] : entries_) {
    DTypeTotals& t = out[slot.entry->dtype];
    t.tensors += 1;
    t.elements += slot.entry->shape.numel();
    t.bytes += static_cast<int64_t>(slot.entry->bytes());
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Writer

namespace {

Status check_writable(const std::vector<NamedView>& tensors, const fs::path& path) {
  std::set<std::string_view> seen;
  for (const NamedView& t : tensors) {
    if (t.name.empty() || t.name == "__metadata__")
      return invalid_argument("writing '{}': tensor name '{}' is reserved or empty", path.string(), t.name);
    if (!seen.insert(t.name).second)
      return invalid_argument("writing '{}': tensor '{}' appears twice", path.string(), t.name);
    if (t.view.device != Device::kCpu)
      return invalid_argument("writing '{}': tensor '{}' is on {}; expected a CPU view", path.string(), t.name,
                              device_name(t.view.device));
    for (int i = 0; i < t.view.shape.ndim; ++i)
      if (t.view.shape[i] < 0)
        return invalid_argument("writing '{}': tensor '{}' has negative shape {}", path.string(), t.name,
                                t.view.shape.str());
    if (t.view.data == nullptr && t.view.bytes() > 0)
      return invalid_argument("writing '{}': tensor '{}' has no data", path.string(), t.name);
  }
  return Status::ok();
}

// The reference implementation's order: larger dtypes first (keeps every tensor aligned), then name.
std::vector<const NamedView*> write_order(const std::vector<NamedView>& tensors) {
  std::vector<const NamedView*> order;
  for (const NamedView& t : tensors) order.push_back(&t);
  std::sort(order.begin(), order.end(), [](const NamedView* a, const NamedView* b) {
    int sa = dtype_size(a->view.dtype), sb = dtype_size(b->view.dtype);
    return sa != sb ? sa > sb : a->name < b->name;
  });
  return order;
}

Result<std::string> build_header(const std::vector<const NamedView*>& order,
                                 const std::map<std::string, std::string>& metadata, const fs::path& path) {
  json h = json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const NamedView* t : order) {
    json shape = json::array();
    for (int i = 0; i < t->view.shape.ndim; ++i) shape.push_back(t->view.shape[i]);
    uint64_t bytes = static_cast<uint64_t>(t->view.bytes());
    h[t->name] = {{"dtype", std::string(dtype_info(t->view.dtype).safetensors)},
                  {"shape", shape},
                  {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  try {
    std::string s = h.dump();
    s.append((8 - s.size() % 8) % 8, ' ');
    return s;
  } catch (const std::exception& ex) {
    return invalid_argument("writing '{}': cannot encode the header ({})", path.string(), ex.what());
  }
}

}  // namespace

Status write_safetensors(const fs::path& path, const std::vector<NamedView>& tensors,
                         const std::map<std::string, std::string>& metadata) {
  RETURN_IF_ERROR(check_writable(tensors, path));
  std::vector<const NamedView*> order = write_order(tensors);
  ASSIGN_OR_RETURN(std::string header, build_header(order, metadata, path));
  unsigned char len[8];
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(n >> (8 * i));
  ASSIGN_OR_RETURN(AtomicFile out, AtomicFile::create(path));
  RETURN_IF_ERROR(out.write(len, sizeof(len)));
  RETURN_IF_ERROR(out.write(header.data(), header.size()));
  for (const NamedView* t : order) RETURN_IF_ERROR(out.write(t->view.data, static_cast<size_t>(t->view.bytes())));
  return out.commit();
}

}  // namespace compactor
