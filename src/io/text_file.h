// Whole-file text reading, SHA-256 hashes (OpenSSL libcrypto) for run records and dataset
// identity, and JSONL field extraction for datasets.
// Test: build-*/tests/test_text_file.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace compactor {

// The file's bytes, unchanged. Errors name the file; an empty file is an error ("... is empty").
Result<std::string> read_text_file(const std::filesystem::path& path);

// Lower-case hex SHA-256 of a file's bytes (streamed, so any size works).
Result<std::string> sha256_file(const std::filesystem::path& path);
std::string sha256_hex(std::string_view bytes);

// The string value of `field` on every non-blank line of a JSON-lines file. Errors name the file
// and the 1-based line (not JSON, not an object, field missing or not a string).
Result<std::vector<std::string>> read_jsonl_field(const std::filesystem::path& path, const std::string& field);

}  // namespace compactor
