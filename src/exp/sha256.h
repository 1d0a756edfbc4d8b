// SHA-256 digests (OpenSSL EVP) for model and data identity in run records. Files are streamed in
// 4 MiB chunks so multi-GB checkpoints never sit in memory. Tested in tests/unit/test_run_store.cpp.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

#include "core/status.h"

namespace compactor {

std::string sha256_hex(std::string_view data);                            // 64 lowercase hex chars
Result<std::string> sha256_file_hex(const std::filesystem::path& file);  // error names the file

}  // namespace compactor
