// YAML recipe config formatter for CLI11 (see recipe.h for how keys are scoped).
#include "exp/recipe.h"

#include <iterator>

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

namespace compactor {
namespace {

using CLI::App;

std::vector<const App*> named_subcommands(const App* app, bool all = true) {
  return app->get_subcommands([&](const App* s) {
    return !s->get_name().empty() && (all || s->get_parent()->got_subcommand(s));
  });
}

// Turns a YAML document into CLI11 config items, checking every key against the app tree.
class RecipeReader {
 public:
  RecipeReader(std::string file, std::vector<const App*> chain) : file_(std::move(file)), chain_(std::move(chain)) {}

  std::vector<CLI::ConfigItem> read(const YAML::Node& doc) {
    if (!doc.IsMap()) fail(doc, "the top level must be a mapping of option names to values");
    for (auto it = doc.begin(); it != doc.end(); ++it) top_level_entry(it->first, it->second);
    return std::move(items_);
  }

 private:
  [[noreturn]] void fail(const YAML::Node& at, const std::string& what) const {
    throw CLI::ConfigError(fmt::format("recipe {}, line {}: {}", file_, at.Mark().line + 1, what));
  }

  std::string key_of(const YAML::Node& key) const {
    if (!key.IsScalar()) fail(key, "keys must be option names");
    return key.Scalar();
  }

  void top_level_entry(const YAML::Node& key_node, const YAML::Node& value) {
    const std::string key = key_of(key_node);
    for (auto app = chain_.rbegin(); app != chain_.rend(); ++app) {
      if (claims(*app, key, value)) return entry(*app, key_node, value);
    }
    const bool no_subcommand_given = chain_.size() == 1 && !named_subcommands(chain_.back()).empty();
    fail(key_node, fmt::format("unknown key '{}': {} has no {}{}", key, describe(chain_.back()),
                               value.IsMap() ? "subcommand '" + key + "'" : "option --" + key,
                               no_subcommand_given ? " (no subcommand was given to look it up in)" : ""));
  }

  void section(const App* app, const YAML::Node& map) {
    for (auto it = map.begin(); it != map.end(); ++it) {
      const std::string key = key_of(it->first);
      if (!claims(app, key, it->second)) {
        fail(it->first, fmt::format("unknown key '{}' in the section of {}: it has no {}", key, describe(app),
                                    it->second.IsMap() ? "subcommand '" + key + "'" : "option --" + key));
      }
      entry(app, it->first, it->second);
    }
  }

  static bool claims(const App* app, const std::string& key, const YAML::Node& value) {
    return value.IsMap() ? find_subcommand(app, key) != nullptr : find_option(app, key) != nullptr;
  }

  void entry(const App* app, const YAML::Node& key_node, const YAML::Node& value) {
    const std::string key = key_node.Scalar();
    if (value.IsMap()) return section(find_subcommand(app, key), value);
    const CLI::Option* opt = find_option(app, key);
    if (!opt->get_configurable()) fail(key_node, fmt::format("--{} cannot be set from a recipe", key));
    std::vector<std::string> inputs = values_of(key_node, value);
    if (inputs.empty()) return;
    CLI::ConfigItem item;
    item.parents = parents_of(app);
    item.name = key;
    item.inputs = std::move(inputs);
    items_.push_back(std::move(item));
  }

  std::vector<std::string> values_of(const YAML::Node& key, const YAML::Node& value) const {
    if (value.IsScalar()) return {scalar_text(value)};
    if (!value.IsSequence()) fail(key, fmt::format("key '{}' has no value", key.Scalar()));
    std::vector<std::string> out;
    for (const YAML::Node& v : value) {
      if (!v.IsScalar()) fail(key, fmt::format("key '{}': list items must be plain values", key.Scalar()));
      out.push_back(scalar_text(v));
    }
    return out;
  }

  // Plain (unquoted) YAML booleans become CLI11's "true"/"false"; everything else is passed as written.
  static std::string scalar_text(const YAML::Node& v) {
    const std::string& s = v.Scalar();
    if (v.Tag() != "?") return s;
    if (s == "true" || s == "True" || s == "TRUE") return "true";
    if (s == "false" || s == "False" || s == "FALSE") return "false";
    return s;
  }

  static const CLI::Option* find_option(const App* app, const std::string& key) {
    if (key.empty()) return nullptr;
    const CLI::Option* opt = app->get_option_no_throw("--" + key);
    if (opt == nullptr && key.size() == 1) opt = app->get_option_no_throw("-" + key);
    if (opt == nullptr) opt = app->get_option_no_throw(key);
    return opt;
  }

  static const App* find_subcommand(const App* app, const std::string& key) {
    if (key.empty()) return nullptr;
    try {
      const App* sub = app->get_subcommand(key);
      return sub->get_name().empty() ? nullptr : sub;
    } catch (const CLI::OptionNotFound&) {
      return nullptr;
    }
  }

  static std::vector<std::string> parents_of(const App* app) {
    std::vector<std::string> parents;
    for (; app != nullptr && app->get_parent() != nullptr; app = app->get_parent()) {
      if (!app->get_name().empty()) parents.insert(parents.begin(), app->get_name());
    }
    return parents;
  }

  static std::string describe(const App* app) {
    std::vector<std::string> parents = parents_of(app);
    return parents.empty() ? "the command" : "'" + fmt::format("{}", fmt::join(parents, " ")) + "'";
  }

  std::string file_;
  std::vector<const App*> chain_;  // root, then each selected subcommand
  std::vector<CLI::ConfigItem> items_;
};

std::vector<const App*> selected_chain(const App* root) {
  std::vector<const App*> chain{root};
  for (;;) {
    const App* next = nullptr;
    for (const App* sub : chain.back()->get_subcommands()) {
      if (!sub->get_name().empty()) {
        next = sub;
        break;
      }
    }
    if (next == nullptr) return chain;
    chain.push_back(next);
  }
}

// Values an option holds after parsing, or its default; empty when it has neither.
std::vector<std::string> option_values(const CLI::Option* opt, bool default_also) {
  if (opt->count() > 0) return opt->reduced_results();
  if (!default_also) return {};
  if (!opt->get_default_str().empty()) return {opt->get_default_str()};
  if (opt->get_expected_min() == 0) return {"false"};
  return {};
}

// Options of `app` and of its nameless option groups, which CLI11 treats as the app's own.
std::vector<const CLI::Option*> own_options(const App* app) {
  std::vector<const CLI::Option*> opts = app->get_options({});
  for (const App* group : app->get_subcommands([](const App* s) { return s->get_name().empty(); })) {
    std::vector<const CLI::Option*> more = own_options(group);
    opts.insert(opts.end(), more.begin(), more.end());
  }
  return opts;
}

YAML::Node options_node(const App* app, bool default_also) {
  YAML::Node node(YAML::NodeType::Map);
  for (const CLI::Option* opt : own_options(app)) {
    if (!opt->get_configurable()) continue;
    std::vector<std::string> values = option_values(opt, default_also);
    if (values.size() == 1) node[opt->get_single_name()] = values[0];
    if (values.size() > 1) node[opt->get_single_name()] = values;
  }
  for (const App* sub : named_subcommands(app, default_also)) {
    YAML::Node child = options_node(sub, default_also);
    if (child.size() > 0) node[sub->get_name()] = child;
  }
  return node;
}

// "512" → 512, "0.5" → 0.5, "true" → true; anything else (including "0012") stays a string.
nlohmann::json typed_value(const std::string& s) {
  nlohmann::json j = nlohmann::json::parse(s, nullptr, /*allow_exceptions=*/false);
  if (!j.is_discarded() && (j.is_number() || j.is_boolean())) return j;
  return s;
}

// Lets `--recipe` (a root option) appear after a subcommand's own arguments.
void set_fallthrough(App& app) {
  app.fallthrough();
  for (App* sub : app.get_subcommands([](App*) { return true; })) set_fallthrough(*sub);
}

}  // namespace

std::string YamlRecipeConfig::recipe_name() const {
  const CLI::Option* opt = root_->get_config_ptr();
  if (opt != nullptr && !opt->results().empty()) return opt->results().back();
  return "<recipe>";
}

std::vector<CLI::ConfigItem> YamlRecipeConfig::from_config(std::istream& input) const {
  const std::string text{std::istreambuf_iterator<char>(input), std::istreambuf_iterator<char>()};
  YAML::Node doc;
  try {
    doc = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw CLI::ConfigError(fmt::format("recipe {}: malformed YAML at line {}, column {}: {}", recipe_name(),
                                       e.mark.line + 1, e.mark.column + 1, e.msg));
  }
  if (!doc || doc.IsNull()) return {};
  return RecipeReader(recipe_name(), selected_chain(root_)).read(doc);
}

std::string YamlRecipeConfig::to_config(const App* app, bool default_also, bool write_description,
                                        std::string /*prefix*/) const {
  YAML::Emitter out;
  if (write_description && !app->get_description().empty()) {
    out << YAML::Comment(app->get_description()) << YAML::Newline;
  }
  out << options_node(app, default_also);
  return std::string(out.c_str()) + "\n";
}

void install_recipe_option(App& app) {
  App* root = &app;
  while (root->get_parent() != nullptr) root = root->get_parent();
  // CLI11 2.1 reads a config file only through the root's config option: one installed on a
  // subcommand would be accepted and silently ignored.
  const bool installed = root->get_config_ptr() != nullptr &&
                         std::dynamic_pointer_cast<YamlRecipeConfig>(root->get_config_formatter()) != nullptr;
  if (!installed) {
    root->config_formatter(std::make_shared<YamlRecipeConfig>(*root));
    root->set_config("--recipe", "", "YAML recipe whose keys mirror the flags; flags override it");
  }
  set_fallthrough(*root);
}

nlohmann::json options_to_json(const App& app) {
  nlohmann::json j = nlohmann::json::object();
  for (const CLI::Option* opt : own_options(&app)) {
    if (opt == app.get_help_ptr() || opt == app.get_help_all_ptr()) continue;
    std::vector<std::string> values = option_values(opt, /*default_also=*/true);
    if (values.empty()) continue;
    const std::string name = opt->get_single_name();
    if (values.size() == 1) {
      j[name] = typed_value(values[0]);
    } else {
      for (const std::string& v : values) j[name].push_back(typed_value(v));
    }
  }
  for (const App* sub : named_subcommands(&app, /*all=*/false)) j[sub->get_name()] = options_to_json(*sub);
  return j;
}

}  // namespace compactor
