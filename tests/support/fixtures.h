// Paths to ../shared fixtures and helpers shared by the test rings.
#pragma once

#include <filesystem>
#include <string>

namespace compactor::test {

// $COMPACTOR_SHARED_DIR / $COMPACTOR_BINARY override the build-time paths (the GPU machine runs
// the binaries from another directory).
std::filesystem::path shared_dir();
inline std::filesystem::path model_dir(const std::string& name) { return shared_dir() / "models" / name; }
inline std::filesystem::path reference_dir(const std::string& name) { return shared_dir() / "reference" / name; }
std::filesystem::path binary_path();
inline std::filesystem::path source_dir() { return COMPACTOR_SOURCE_DIR; }

// A fresh empty directory under the system temp dir, removed by the caller (or left for debugging).
std::filesystem::path make_temp_dir(const std::string& prefix);

}  // namespace compactor::test
