#include "support/fixtures.h"

#include <cstdlib>
#include <random>

namespace compactor::test {

std::filesystem::path shared_dir() {
  const char* env = std::getenv("COMPACTOR_SHARED_DIR");
  return env != nullptr ? env : COMPACTOR_SHARED_DIR;
}

std::filesystem::path binary_path() {
  const char* env = std::getenv("COMPACTOR_BINARY");
  return env != nullptr ? env : COMPACTOR_BINARY;
}

std::filesystem::path make_temp_dir(const std::string& prefix) {
  std::random_device rd;
  auto dir = std::filesystem::temp_directory_path() / (prefix + "-" + std::to_string(rd()));
  std::filesystem::create_directories(dir);
  return dir;
}

}  // namespace compactor::test
