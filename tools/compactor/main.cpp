// compactor: one binary for every step (DESIGN.md "Interface"). Each subcommand lives in its own
// cmd_<name>.cpp; this file only builds the command tree and dispatches.
#include <cstdio>

#include "common.h"
#include "core/version.h"
#include "exp/recipe.h"

int main(int argc, char** argv) {
  using namespace compactor::cli;
  CLI::App app{"compactor: compress decoder-only LLMs and measure what it cost and bought"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string(compactor::tool_version()) + " (" +
                                        std::string(compactor::git_commit()) + ")");
  std::vector<Command> commands = {make_info_command(app),  make_tokenize_command(app), make_generate_command(app),
                                   make_eval_command(app),  make_bench_command(app),    make_runs_command(app),
                                   make_quantize_command(app)};
  // Every subcommand reads `--recipe FILE.yaml`; flags given on the command line override it.
  compactor::install_recipe_option(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  for (const Command& c : commands)
    if (c.app->parsed()) return c.run();
  return 1;
}
