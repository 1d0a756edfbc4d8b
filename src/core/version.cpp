// Tool version and git commit from compile definitions (see version.h).
#include "core/version.h"

#ifndef COMPACTOR_VERSION
#define COMPACTOR_VERSION "unknown"
#endif
#ifndef COMPACTOR_GIT_COMMIT
#define COMPACTOR_GIT_COMMIT "unknown"
#endif

namespace compactor {

std::string_view tool_version() { return COMPACTOR_VERSION; }
std::string_view git_commit() { return COMPACTOR_GIT_COMMIT; }

}  // namespace compactor
