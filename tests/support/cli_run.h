// Runs the compactor binary (test::binary_path()) with arguments and captures what it printed:
// the CLI tests of every ring check exit codes, JSON on stdout and messages on stderr with it.
#pragma once

#include <filesystem>
#include <string>

namespace compactor::test {

struct CliResult {
  int exit_code = -1;  // 128 + signal when the process was killed
  std::string out, err;
};

// `compactor ARGS` through the shell (ARGS may redirect or quote); stderr goes through a file in
// scratch_dir, which must exist.
CliResult run_cli(const std::string& args, const std::filesystem::path& scratch_dir);

}  // namespace compactor::test
