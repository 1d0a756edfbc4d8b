#include "support/cli_run.h"

#include <sys/wait.h>

#include <cstdio>
#include <fstream>
#include <iterator>

#include "support/fixtures.h"

namespace compactor::test {

CliResult run_cli(const std::string& args, const std::filesystem::path& scratch_dir) {
  const auto err_path = scratch_dir / "stderr.txt";
  const std::string cmd = binary_path().string() + " " + args + " 2>" + err_path.string();
  CliResult r;
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, pipe)) > 0) r.out.append(buf, n);
  const int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  std::ifstream e(err_path);
  r.err.assign(std::istreambuf_iterator<char>(e), {});
  return r;
}

}  // namespace compactor::test
