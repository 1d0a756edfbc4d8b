// Named datasets (`--data wikitext2`) resolved to files under the fixtures directory
// (../shared by default, or $COMPACTOR_SHARED); any other value is taken as a file path.
#pragma once

#include <filesystem>
#include <string>

#include "core/status.h"

namespace compactor::cli {

std::filesystem::path shared_dir();
Result<std::filesystem::path> resolve_dataset(const std::string& name_or_path);

}  // namespace compactor::cli
