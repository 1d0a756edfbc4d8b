// Minimal reader for NumPy .npy files (format version 1.0-3.0) as written by numpy.save:
// little-endian int32 ('<i4') arrays only, which is what ../shared/reference stores token ids in.
// Format: https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html
#pragma once

#include <cstdint>
#include <filesystem>
#include <vector>

#include "core/status.h"

namespace compactor::test {

struct NpyInt32 {
  std::vector<int64_t> shape;
  std::vector<int32_t> data;  // C order
};

// Reads an '<i4' C-order array; errors name the file and what was expected.
Result<NpyInt32> read_npy_int32(const std::filesystem::path& path);

}  // namespace compactor::test
