// YAML recipes for the CLI: every flag can come from a recipe file whose keys mirror the flags, and
// flags given on the command line override it (DESIGN.md "Interface"). Implemented as a CLI11 2.1
// config formatter (CLI::Config) reading YAML with yaml-cpp. Tested in tests/unit/test_recipe.cpp.
//
// How keys are scoped. CLI11 2.1 reads the config file only on the root App, after the whole
// command line has been parsed, and fills only options the command line left empty. So:
//  - `--recipe FILE` is an option of the root app. install_recipe_option(app) installs it on the
//    root of `app` (so calling it from a subcommand, or once per subcommand, is fine: it is
//    installed once) and turns on fallthrough on every subcommand there is so far (later ones
//    inherit it), so the intended form `compactor eval MODEL --recipe r.yaml` reaches it. The
//    option therefore shows in the root's --help, not the subcommand's.
//  - A top-level key is looked up in the selected subcommand chain, deepest first: for
//    `compactor eval ...`, `ctx: 512` sets eval's --ctx; a key eval lacks but the root has (say a
//    global `threads:`) sets the root's option. Lookup mirrors CLI11: `--key`, `-k`, then a
//    positional named `key` (so `model: path` fills a positional MODEL left off the command line).
//  - A key whose value is a mapping names a subcommand section: `eval: {ctx: 512}`. Sections nest,
//    are checked against that subcommand's options, and only take effect when that subcommand is
//    the one run (one recipe can carry sections for several commands).
//  - Values: scalar → one value; sequence of scalars → several values (like a repeated flag);
//    YAML booleans (true/True/TRUE/false/...) → "true"/"false"; an empty sequence → key ignored;
//    null or nested values → error.
//  - Errors are thrown from CLI::App::parse like every other CLI11 parse error (main turns them into
//    an exit code with app.exit(e)): unknown key → CLI::ConfigError naming key, line and file;
//    malformed YAML → CLI::ConfigError naming file, line and column; missing file → CLI::FileError
//    naming it. Only one --recipe per command line.
#pragma once

#include <istream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>  // all of it: App.hpp alone leaves CLI::Formatter undefined at link time
#include <nlohmann/json.hpp>

namespace compactor {

class YamlRecipeConfig : public CLI::Config {
 public:
  // root: the app whose --recipe option is read; used to scope keys and to name the file in errors.
  explicit YamlRecipeConfig(const CLI::App& root) : root_(&root) {}

  // YAML of the app's options that have values (or defaults when default_also), with a section per
  // selected subcommand; `prefix` is ignored (sections are nested mappings). Readable by from_config.
  std::string to_config(const CLI::App* app, bool default_also, bool write_description,
                        std::string prefix) const override;
  std::vector<CLI::ConfigItem> from_config(std::istream& input) const override;

 private:
  std::string recipe_name() const;
  const CLI::App* root_;
};

// root.config_formatter(YamlRecipeConfig) + root.set_config("--recipe", ...) + fallthrough, where
// root is app's root (see above). Idempotent.
void install_recipe_option(CLI::App& app);

// The effective options of `app` after parsing (command line merged with the recipe) for the
// run record's "args": {"option": value, ...} with numbers and booleans typed, several values as
// an array, defaults for options not given, flags not given as false, and a nested object for each
// selected subcommand.
nlohmann::json options_to_json(const CLI::App& app);

}  // namespace compactor
