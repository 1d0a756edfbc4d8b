// safetensors reading (read-only mmap, fully validated header) and atomic writing, plus the weight
// files of a Hugging Face model directory (`model.safetensors`, or shards listed by
// `model.safetensors.index.json`).
// Format (https://github.com/huggingface/safetensors): u64 little-endian header length N, N bytes
// of JSON {"__metadata__": {str: str}, name: {"dtype", "shape", "data_offsets": [begin, end]}},
// then the data section; offsets are relative to the data section's start.
// Tests: build-*/tests/test_safetensors, build-*/tests/test_io_fuzz.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/dtype.h"
#include "core/status.h"
#include "core/tensor.h"

namespace compactor {

// Largest header accepted (the reference implementation's limit): guards against absurd lengths.
constexpr uint64_t kMaxSafetensorsHeader = 100'000'000;

struct TensorEntry {
  std::string name;
  DType dtype = DType::kF32;
  Shape shape;
  uint64_t begin = 0;  // byte offsets in the data section
  uint64_t end = 0;
  const std::byte* data = nullptr;  // into the mapping; valid while the SafetensorsFile lives

  uint64_t bytes() const { return end - begin; }
  // A CPU view into the read-only mapping (writing through it faults).
  View view() const;
};

// Page-cache hints for a tensor's bytes (madvise).
enum class MapAdvice { kNormal, kWillNeed, kSequential, kDontNeed };

class SafetensorsFile {
 public:
  static Result<std::shared_ptr<SafetensorsFile>> open(const std::filesystem::path& path);
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;
  ~SafetensorsFile();

  const std::filesystem::path& path() const { return path_; }
  // Tensor names in data-offset order (the order of their bytes in the file).
  std::vector<std::string> tensor_names() const;
  const std::vector<TensorEntry>& tensors() const { return tensors_; }
  const TensorEntry* find(std::string_view name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  uint64_t file_size() const { return size_; }
  uint64_t data_start() const { return data_start_; }  // 8 + header length
  // Hints the kernel about a tensor's pages (e.g. kDontNeed after a block was processed).
  void advise(const TensorEntry& entry, MapAdvice advice) const;

 private:
  SafetensorsFile() = default;
  Status parse_header(std::string_view header);

  std::filesystem::path path_;
  void* map_ = nullptr;
  uint64_t size_ = 0;
  uint64_t data_start_ = 0;
  std::vector<TensorEntry> tensors_;  // sorted by data offset
  std::map<std::string, size_t, std::less<>> index_;
  std::map<std::string, std::string> metadata_;
};

// Element/tensor/byte totals of one dtype across a model's weights.
struct DTypeTotals {
  int64_t tensors = 0;
  int64_t elements = 0;
  int64_t bytes = 0;
};

// The safetensors weights of a Hugging Face model directory. Copies share the mappings.
class WeightFiles {
 public:
  static Result<WeightFiles> open(const std::filesystem::path& dir);

  const TensorEntry* find(std::string_view name) const;
  std::vector<std::string> names() const;  // sorted
  size_t size() const { return entries_.size(); }
  int64_t total_bytes() const;
  int64_t total_elements() const;
  std::map<DType, DTypeTotals> dtype_totals() const;
  const std::vector<std::shared_ptr<SafetensorsFile>>& files() const { return files_; }
  // The shard that holds `name` (nullptr when absent).
  const SafetensorsFile* file_of(std::string_view name) const;
  const std::filesystem::path& dir() const { return dir_; }

 private:
  struct Slot {
    const TensorEntry* entry;
    size_t file;
  };
  Status add_file(std::shared_ptr<SafetensorsFile> file);

  std::filesystem::path dir_;
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, Slot, std::less<>> entries_;
};

struct NamedView {
  std::string name;
  View view;  // CPU, contiguous
};

// Writes a safetensors file atomically (temp + fsync + rename). Tensors are laid out by dtype size
// (largest first) then name, as the reference implementation does, so every tensor stays aligned;
// the header is padded with spaces to a multiple of 8 bytes.
Status write_safetensors(const std::filesystem::path& path, const std::vector<NamedView>& tensors,
                         const std::map<std::string, std::string>& metadata = {});

}  // namespace compactor
