// Tool version and git commit baked in at configure time (COMPACTOR_VERSION / COMPACTOR_GIT_COMMIT,
// set on compactor_core in src/CMakeLists.txt). Run records carry both. The commit is read when CMake
// configures, so it is stale until the next configure; records are still traceable by version.
#pragma once

#include <string_view>

namespace compactor {

std::string_view tool_version();  // e.g. "0.1.0"
std::string_view git_commit();     // 12-hex short commit, or "unknown" outside a git checkout

}  // namespace compactor
