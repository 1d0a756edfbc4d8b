#include "eval/task_spec.h"

#include <algorithm>
#include <set>

#include <yaml-cpp/yaml.h>

#include "io/text_file.h"

namespace compactor {

namespace {

// Reads typed keys of one YAML map, naming the file, key and line in every error.
class YamlReader {
 public:
  YamlReader(std::string source) : source_(std::move(source)) {}

  Status error(const YAML::Node& node, const std::string& key, const std::string& what) const {
    const int line = node.Mark().line >= 0 ? node.Mark().line + 1 : 0;
    return invalid_argument("{}{}: '{}': {}", source_, line > 0 ? fmt::format(":{}", line) : "", key, what);
  }

  Result<std::string> string(const YAML::Node& map, const std::string& key, bool required,
                             const std::string& fallback = "") const {
    const YAML::Node n = map[key];
    if (!n) {
      if (required) return invalid_argument("{}: missing required key '{}'", source_, key);
      return fallback;
    }
    if (!n.IsScalar()) return error(n, key, "expected text");
    return n.as<std::string>();
  }

  Result<int> integer(const YAML::Node& map, const std::string& key, int fallback) const {
    const YAML::Node n = map[key];
    if (!n) return fallback;
    try {
      return n.as<int>();
    } catch (const YAML::Exception&) {
      return error(n, key, "expected an integer");
    }
  }

  Result<std::vector<std::string>> strings(const YAML::Node& map, const std::string& key) const {
    const YAML::Node n = map[key];
    if (!n) return invalid_argument("{}: missing required key '{}'", source_, key);
    if (!n.IsSequence()) return error(n, key, "expected a list of text");
    std::vector<std::string> out;
    for (const auto& el : n) {
      if (!el.IsScalar()) return error(el, key, "expected a list of text");
      out.push_back(el.as<std::string>());
    }
    return out;
  }

  Status unknown_keys(const YAML::Node& map, const std::string& where, std::initializer_list<const char*> known) const {
    for (const auto& kv : map) {
      const std::string k = kv.first.as<std::string>();
      if (std::none_of(known.begin(), known.end(), [&](const char* s) { return k == s; }))
        return error(kv.first, where.empty() ? k : where + "." + k, "unknown key");
    }
    return Status::ok();
  }

  const std::string& source() const { return source_; }

 private:
  std::string source_;
};

Result<DataSourceSpec> parse_source(const YamlReader& r, const YAML::Node& n, const std::string& key,
                                    const DataSourceSpec* defaults) {
  if (!n.IsMap()) return r.error(n, key, "expected a map with path and format");
  RETURN_IF_ERROR(r.unknown_keys(n, key, {"path", "format", "columns", "header", "count", "sampler", "delimiter"}));
  DataSourceSpec s = defaults ? *defaults : DataSourceSpec{};
  ASSIGN_OR_RETURN(s.path, r.string(n, "path", true));
  if (n["format"] || !defaults) {
    ASSIGN_OR_RETURN(std::string fmt_name, r.string(n, "format", true));
    auto f = data_format_from_name(fmt_name);
    if (!f) return r.error(n["format"], key + ".format", f.status().message());
    s.format = *f;
  }
  if (n["columns"]) {
    ASSIGN_OR_RETURN(s.csv.columns, r.strings(n, "columns"));
  }
  if (n["header"]) s.csv.header = n["header"].as<bool>();
  if (s.format == DataFormat::kCsv && s.csv.columns.empty() && !s.csv.header)
    return r.error(n, key, "csv data needs `columns:` or `header: true`");
  return s;
}

Result<ChoicesSpec> parse_choices(const YamlReader& r, const YAML::Node& n) {
  if (!n) return invalid_argument("{}: missing required key 'choices'", r.source());
  if (!n.IsMap()) return r.error(n, "choices", "expected {field: ...}, {fields: [...]} or {literal: [...]}");
  RETURN_IF_ERROR(r.unknown_keys(n, "choices", {"field", "fields", "literal"}));
  ChoicesSpec c;
  if (n["field"]) {
    c.kind = ChoicesKind::kField;
    ASSIGN_OR_RETURN(c.field, r.string(n, "field", true));
  } else if (n["fields"]) {
    c.kind = ChoicesKind::kFields;
    ASSIGN_OR_RETURN(c.values, r.strings(n, "fields"));
  } else if (n["literal"]) {
    c.kind = ChoicesKind::kLiteral;
    ASSIGN_OR_RETURN(c.values, r.strings(n, "literal"));
  } else {
    return r.error(n, "choices", "expected one of field, fields, literal");
  }
  if (c.kind != ChoicesKind::kField && c.values.size() < 2) return r.error(n, "choices", "needs at least 2 choices");
  return c;
}

Result<GoldSpec> parse_gold(const YamlReader& r, const YAML::Node& n) {
  if (!n || !n.IsMap()) return invalid_argument("{}: 'gold': expected a map ({{field: ...}} or {{mask_field: ...}})", r.source());
  RETURN_IF_ERROR(r.unknown_keys(n, "gold", {"field", "labels", "labels_field", "index_base", "mask_field"}));
  GoldSpec g;
  if (n["mask_field"]) {
    g.kind = GoldKind::kMask;
    ASSIGN_OR_RETURN(g.field, r.string(n, "mask_field", true));
    return g;
  }
  ASSIGN_OR_RETURN(g.field, r.string(n, "field", true));
  if (n["labels_field"]) {
    g.kind = GoldKind::kLabel;
    ASSIGN_OR_RETURN(g.labels_field, r.string(n, "labels_field", true));
  } else if (n["labels"]) {
    g.kind = GoldKind::kLabel;
    ASSIGN_OR_RETURN(g.labels, r.strings(n, "labels"));
  }
  ASSIGN_OR_RETURN(g.index_base, r.integer(n, "index_base", 0));
  return g;
}

Result<std::vector<McMetric>> parse_metrics(const YamlReader& r, const YAML::Node& root) {
  ASSIGN_OR_RETURN(std::vector<std::string> names, r.strings(root, "metrics"));
  std::vector<McMetric> out;
  for (const auto& m : names) {
    if (m == "acc") out.push_back(McMetric::kAcc);
    else if (m == "acc_norm") out.push_back(McMetric::kAccNorm);
    else if (m == "mc2") out.push_back(McMetric::kMc2);
    else return r.error(root["metrics"], "metrics", fmt::format("unknown metric '{}' (acc, acc_norm, mc2)", m));
  }
  if (out.empty()) return r.error(root["metrics"], "metrics", "needs at least one metric");
  return out;
}

Result<DocTemplate> parse_template(const YamlReader& r, const YAML::Node& root, const std::string& key, bool required,
                                   const std::string& fallback) {
  ASSIGN_OR_RETURN(std::string text, r.string(root, key, required, fallback));
  auto t = DocTemplate::parse(text);
  if (!t) return r.error(root[key], key, t.status().message());
  return t;
}

Status parse_fewshot(const YamlReader& r, const YAML::Node& n, TaskSpec& spec) {
  if (!n) return Status::ok();
  ASSIGN_OR_RETURN(DataSourceSpec src, parse_source(r, n, "fewshot", &spec.dataset));
  spec.fewshot.source = src;
  ASSIGN_OR_RETURN(spec.fewshot.count, r.integer(n, "count", 0));
  if (spec.fewshot.count < 0) return r.error(n["count"], "fewshot.count", "must be >= 0");
  ASSIGN_OR_RETURN(std::string sampler, r.string(n, "sampler", false, "first"));
  if (sampler == "first") spec.fewshot.sampler = FewshotSampler::kFirst;
  else if (sampler == "random") spec.fewshot.sampler = FewshotSampler::kRandom;
  else return r.error(n["sampler"], "fewshot.sampler", "expected first or random");
  ASSIGN_OR_RETURN(spec.fewshot.delimiter, r.string(n, "delimiter", false, "\n\n"));
  return Status::ok();
}

Result<TaskSpec> parse_root(const YamlReader& r, const YAML::Node& root) {
  if (!root.IsMap()) return invalid_argument("{}: expected a YAML map of task settings", r.source());
  RETURN_IF_ERROR(r.unknown_keys(root, "", {"task", "split", "dataset", "fewshot", "description", "context", "choices",
                                            "choice", "target_delimiter", "gold", "metrics"}));
  TaskSpec spec;
  ASSIGN_OR_RETURN(spec.name, r.string(root, "task", true));
  ASSIGN_OR_RETURN(spec.split, r.string(root, "split", false, ""));
  if (!root["dataset"]) return invalid_argument("{}: missing required key 'dataset'", r.source());
  ASSIGN_OR_RETURN(spec.dataset, parse_source(r, root["dataset"], "dataset", nullptr));
  ASSIGN_OR_RETURN(spec.group_field, path_placeholder(spec.dataset.path));
  RETURN_IF_ERROR(parse_fewshot(r, root["fewshot"], spec));
  if (spec.fewshot.source) {
    ASSIGN_OR_RETURN(std::string pool_group, path_placeholder(spec.fewshot.source->path));
    if (!pool_group.empty() && pool_group != spec.group_field)
      return r.error(root["fewshot"], "fewshot.path",
                     fmt::format("placeholder {{{}}} must be the dataset's ({{{}}})", pool_group, spec.group_field));
  }
  ASSIGN_OR_RETURN(spec.description, parse_template(r, root, "description", false, ""));
  ASSIGN_OR_RETURN(spec.context, parse_template(r, root, "context", true, ""));
  ASSIGN_OR_RETURN(spec.choice, parse_template(r, root, "choice", false, "{choice}"));
  ASSIGN_OR_RETURN(spec.target_delimiter, r.string(root, "target_delimiter", false, " "));
  ASSIGN_OR_RETURN(spec.choices, parse_choices(r, root["choices"]));
  ASSIGN_OR_RETURN(spec.gold, parse_gold(r, root["gold"]));
  ASSIGN_OR_RETURN(spec.metrics, parse_metrics(r, root));
  const bool has_mc2 = std::count(spec.metrics.begin(), spec.metrics.end(), McMetric::kMc2) > 0;
  if (has_mc2 && spec.gold.kind != GoldKind::kMask)
    return invalid_argument("{}: metric mc2 needs gold: {{mask_field: ...}} (the true answers)", r.source());
  return spec;
}

}  // namespace

const char* mc_metric_name(McMetric m) {
  switch (m) {
    case McMetric::kAcc: return "acc";
    case McMetric::kAccNorm: return "acc_norm";
    case McMetric::kMc2: return "mc2";
  }
  return "?";
}

Result<std::string> path_placeholder(const std::string& path) {
  const size_t open = path.find('{');
  const size_t close = path.find('}');
  if (open == std::string::npos && close == std::string::npos) return std::string();
  if (open == std::string::npos || close == std::string::npos || close < open || path.find('{', open + 1) != std::string::npos ||
      path.find('}', close + 1) != std::string::npos)
    return invalid_argument("data path '{}': expected at most one {{name}} placeholder", path);
  if (path.find('/', open) != std::string::npos)
    return invalid_argument("data path '{}': the {{name}} placeholder must be in the file name", path);
  std::string name = path.substr(open + 1, close - open - 1);
  if (name.empty()) return invalid_argument("data path '{}': empty placeholder", path);
  return name;
}

Result<TaskSpec> parse_task_spec(std::string_view yaml_text, const std::string& source_name) {
  YamlReader r(source_name);
  try {
    YAML::Node root = YAML::Load(std::string(yaml_text));
    return parse_root(r, root);
  } catch (const YAML::Exception& e) {
    return invalid_argument("{}:{}: not valid YAML: {}", source_name, e.mark.line + 1, e.msg);
  }
}

Result<TaskSpec> load_task_spec(const std::filesystem::path& yaml_file) {
  ASSIGN_OR_RETURN(std::string text, read_text_file(yaml_file));
  ASSIGN_OR_RETURN(TaskSpec spec, parse_task_spec(text, yaml_file.string()));
  spec.file = yaml_file;
  return spec;
}

std::vector<std::string> list_task_names(const std::filesystem::path& tasks_dir) {
  std::set<std::string> names;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(tasks_dir, ec))
    if (e.path().extension() == ".yaml") names.insert(e.path().stem().string());
  return {names.begin(), names.end()};
}

Result<std::filesystem::path> find_task_file(const std::string& name, const std::filesystem::path& tasks_dir) {
  const std::filesystem::path p = tasks_dir / (name + ".yaml");
  if (std::filesystem::is_regular_file(p)) return p;
  std::string known;
  for (const auto& n : list_task_names(tasks_dir)) known += (known.empty() ? "" : ", ") + n;
  return not_found("--tasks: unknown task '{}' (no {}; tasks there: {})", name, p.string(),
                   known.empty() ? "none" : known);
}

}  // namespace compactor
