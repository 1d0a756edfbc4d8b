// Minimal .npy reader (see npy.h): magic, version, header dict ('descr', 'fortran_order',
// 'shape'), then the raw little-endian data.
#include "support/npy.h"

#include <cstring>
#include <fstream>
#include <iterator>
#include <string>

namespace compactor::test {

namespace {

Result<std::vector<int64_t>> parse_shape(const std::string& header, const std::string& file) {
  const size_t key = header.find("'shape'");
  const size_t open = header.find('(', key);
  const size_t close = header.find(')', open);
  if (key == std::string::npos || open == std::string::npos || close == std::string::npos)
    return corrupt("{}: npy header has no 'shape': {}", file, header);
  std::vector<int64_t> shape;
  int64_t value = -1;
  for (size_t i = open + 1; i <= close; ++i) {
    const char c = header[i];
    if (c >= '0' && c <= '9') {
      value = (value < 0 ? 0 : value * 10) + (c - '0');
    } else if (value >= 0) {
      shape.push_back(value);
      value = -1;
    }
  }
  return shape;
}

}  // namespace

Result<NpyInt32> read_npy_int32(const std::filesystem::path& path) {
  const std::string file = path.string();
  std::ifstream in(path, std::ios::binary);
  if (!in) return not_found("{}: cannot open", file);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (bytes.size() < 10 || bytes.compare(0, 6, "\x93NUMPY") != 0) return corrupt("{}: not a .npy file", file);
  const int major = static_cast<unsigned char>(bytes[6]);
  const size_t len_bytes = major == 1 ? 2 : 4;
  size_t header_len = 0;
  for (size_t i = 0; i < len_bytes; ++i) header_len |= static_cast<size_t>(static_cast<unsigned char>(bytes[8 + i])) << (8 * i);
  const size_t data_start = 8 + len_bytes + header_len;
  if (data_start > bytes.size()) return corrupt("{}: truncated npy header", file);
  const std::string header = bytes.substr(8 + len_bytes, header_len);
  if (header.find("'descr': '<i4'") == std::string::npos) return unsupported("{}: expected descr '<i4': {}", file, header);
  if (header.find("'fortran_order': False") == std::string::npos) return unsupported("{}: expected C order", file);
  NpyInt32 out;
  ASSIGN_OR_RETURN(out.shape, parse_shape(header, file));
  size_t count = 1;
  for (int64_t d : out.shape) count *= static_cast<size_t>(d);
  if (bytes.size() - data_start != count * 4)
    return corrupt("{}: {} data bytes, shape needs {}", file, bytes.size() - data_start, count * 4);
  out.data.resize(count);
  std::memcpy(out.data.data(), bytes.data() + data_start, count * 4);  // host is little-endian (x86/ARM)
  return out;
}

}  // namespace compactor::test
