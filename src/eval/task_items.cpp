#include "eval/task_items.h"

#include <algorithm>
#include <charconv>
#include <numeric>

#include <fmt/ranges.h>

#include "eval/stats.h"

namespace compactor {

namespace {

std::filesystem::path resolve(const std::string& path, const std::filesystem::path& data_dir) {
  const std::filesystem::path p(path);
  return p.is_absolute() ? p : data_dir / p;
}

Result<std::vector<std::string>> choices_of(const TaskSpec& spec, const Doc& doc) {
  const ChoicesSpec& c = spec.choices;
  if (c.kind == ChoicesKind::kLiteral) return c.values;
  if (c.kind == ChoicesKind::kField) return lookup_string_list(doc, c.field);
  std::vector<std::string> out;
  for (const auto& path : c.values) {
    ASSIGN_OR_RETURN(Doc v, lookup_path(doc, path));
    ASSIGN_OR_RETURN(std::string s, scalar_text(v, path));
    out.push_back(std::move(s));
  }
  return out;
}

Result<int64_t> parse_index(const Doc& v, const std::string& field) {
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_string()) {
    const std::string s = v.get<std::string>();
    int64_t x = 0;
    auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), x);
    if (ec == std::errc() && ptr == s.data() + s.size()) return x;
  }
  return invalid_argument("gold field '{}' is {}, expected an integer index", field, v.dump());
}

Result<std::vector<uint8_t>> gold_mask_of(const GoldSpec& g, const Doc& doc, size_t n_choices) {
  ASSIGN_OR_RETURN(Doc v, lookup_path(doc, g.field));
  if (!v.is_array()) return invalid_argument("gold field '{}' is a {}, expected a list of 1/0", g.field, v.type_name());
  if (v.size() != n_choices)
    return invalid_argument("gold field '{}' has {} entries for {} choices", g.field, v.size(), n_choices);
  std::vector<uint8_t> mask;
  for (const Doc& el : v) {
    if (el.is_boolean()) mask.push_back(el.get<bool>() ? 1 : 0);
    else if (el.is_number_integer() && (el.get<int64_t>() == 0 || el.get<int64_t>() == 1)) mask.push_back(el.get<int64_t>() != 0);
    else return invalid_argument("gold field '{}' holds {}, expected 1 or 0", g.field, el.dump());
  }
  if (std::count(mask.begin(), mask.end(), 1) == 0) return invalid_argument("gold field '{}' marks no true answer", g.field);
  return mask;
}

// The gold index for index and label golds; for masks, the single true answer (or -1).
Result<int> gold_index_of(const GoldSpec& g, const Doc& doc, size_t n_choices) {
  ASSIGN_OR_RETURN(Doc v, lookup_path(doc, g.field));
  int64_t idx = 0;
  if (g.kind == GoldKind::kIndex) {
    ASSIGN_OR_RETURN(idx, parse_index(v, g.field));
    idx -= g.index_base;
  } else {
    ASSIGN_OR_RETURN(std::string label, scalar_text(v, g.field));
    std::vector<std::string> labels = g.labels;
    if (!g.labels_field.empty()) {
      ASSIGN_OR_RETURN(labels, lookup_string_list(doc, g.labels_field));
    }
    auto it = std::find(labels.begin(), labels.end(), label);
    if (it == labels.end())
      return invalid_argument("gold '{}' (field '{}') is not one of the labels [{}]", label, g.field,
                              fmt::format("{}", fmt::join(labels, ", ")));
    idx = it - labels.begin();
  }
  if (idx < 0 || idx >= static_cast<int64_t>(n_choices))
    return invalid_argument("gold index {} (field '{}') is out of range for {} choices", idx, g.field, n_choices);
  return static_cast<int>(idx);
}

bool needs_single_gold(const TaskSpec& spec) {
  return std::any_of(spec.metrics.begin(), spec.metrics.end(), [](McMetric m) { return m != McMetric::kMc2; });
}

// A few-shot pool: its rendered rows, and the dataset row it must never show (or -1).
struct Pool {
  std::string file;
  std::vector<RenderedRow> rows;
  std::vector<int64_t> source_rows;  // index of each pool row in its file
  bool is_dataset = false;
};

// Adds the group's field (the {name} placeholder's value) to every document of a group file.
void tag_group(const TaskSpec& spec, const std::string& group, DataReadResult& data) {
  if (spec.group_field.empty()) return;
  for (DataRow& row : data.rows)
    if (!row.doc.contains(spec.group_field)) row.doc[spec.group_field] = group;
}

Result<Pool> load_pool(const TaskSpec& spec, const std::filesystem::path& file, const DataFile& dataset,
                       bool skip_bad, std::vector<std::string>& skipped) {
  const DataSourceSpec& src = *spec.fewshot.source;
  ASSIGN_OR_RETURN(DataReadResult data, read_task_data(file, src.format, src.csv, skip_bad));
  tag_group(spec, dataset.group, data);
  const std::filesystem::path& dataset_file = dataset.path;
  Pool pool;
  pool.file = file.string();
  std::error_code ec;
  pool.is_dataset = std::filesystem::equivalent(file, dataset_file, ec);
  skipped.insert(skipped.end(), data.skipped.begin(), data.skipped.end());
  for (size_t i = 0; i < data.rows.size(); ++i) {
    auto r = render_row(spec, data.rows[i].doc);
    if (r && r->gold < 0) r = invalid_argument("a few-shot example needs one gold answer");
    if (!r) {
      if (!skip_bad) return r.status().with_context(data.rows[i].location);
      skipped.push_back(data.rows[i].location + ": " + r.status().message());
      continue;
    }
    pool.rows.push_back(std::move(*r));
    pool.source_rows.push_back(static_cast<int64_t>(i));
  }
  return pool;
}

// The few-shot prefix of the dataset row `row` (its index in the data file).
std::string shots_text(const TaskSpec& spec, const Pool& pool, int shots, int64_t row, uint64_t seed) {
  std::vector<size_t> candidates;
  for (size_t i = 0; i < pool.rows.size(); ++i)
    if (!(pool.is_dataset && pool.source_rows[i] == row)) candidates.push_back(i);
  if (spec.fewshot.sampler == FewshotSampler::kRandom) {
    SplitMix64 rng(seed ^ (0x9e3779b97f4a7c15ULL * static_cast<uint64_t>(row + 1)));
    for (int k = 0; k < shots; ++k) std::swap(candidates[k], candidates[k + rng.below(candidates.size() - k)]);
  }
  std::string text;
  for (int k = 0; k < shots; ++k) {
    const RenderedRow& s = pool.rows[candidates[k]];
    text += s.context + spec.target_delimiter + s.choices[s.gold] + spec.fewshot.delimiter;
  }
  return text;
}

// Rows kept by --limit: the first N, or N drawn at random (kept in file order).
std::vector<size_t> select_rows(size_t n, const TaskBuildOptions& opts) {
  std::vector<size_t> idx(n);
  std::iota(idx.begin(), idx.end(), 0);
  if (opts.limit <= 0 || static_cast<size_t>(opts.limit) >= n) return idx;
  if (opts.subset_seed) {
    SplitMix64 rng(*opts.subset_seed);
    for (size_t k = 0; k < static_cast<size_t>(opts.limit); ++k) std::swap(idx[k], idx[k + rng.below(n - k)]);
    idx.resize(opts.limit);
    std::sort(idx.begin(), idx.end());
  } else {
    idx.resize(opts.limit);
  }
  return idx;
}

Status build_group(const TaskSpec& spec, const TaskBuildOptions& opts, const DataFile& file, TaskInstance& task) {
  ASSIGN_OR_RETURN(DataReadResult data, read_task_data(file.path, spec.dataset.format, spec.dataset.csv, opts.skip_bad));
  task.skipped.insert(task.skipped.end(), data.skipped.begin(), data.skipped.end());
  tag_group(spec, file.group, data);
  if (data.rows.empty()) return invalid_argument("task {}: {} has no {}rows", spec.name, file.path.string(), data.skipped.empty() ? "" : "valid ");
  Pool pool;
  if (task.shots > 0) {
    std::string pool_path = spec.fewshot.source->path;
    if (!spec.group_field.empty()) pool_path.replace(pool_path.find('{'), spec.group_field.size() + 2, file.group);
    ASSIGN_OR_RETURN(pool, load_pool(spec, resolve(pool_path, opts.data_dir), file, opts.skip_bad, task.skipped));
    const size_t available = pool.rows.size() - (pool.is_dataset ? 1 : 0);
    if (static_cast<size_t>(task.shots) > available)
      return invalid_argument("task {}: {} few-shot examples requested but the pool {} has {}", spec.name, task.shots,
                              pool.file, available);
  }
  TaskGroup group{file.group, file.path.string(), static_cast<int64_t>(data.rows.size()),
                  static_cast<int64_t>(task.items.size()), 0};
  for (size_t i : select_rows(data.rows.size(), opts)) {
    const DataRow& row = data.rows[i];
    auto r = render_row(spec, row.doc);
    if (r && r->gold < 0 && needs_single_gold(spec)) r = invalid_argument("acc needs exactly one true answer");
    if (!r) {
      if (!opts.skip_bad) return r.status().with_context(row.location);
      task.skipped.push_back(row.location + ": " + r.status().message());
      continue;
    }
    McItem item{row.location, file.group, "", {}, {}, r->gold, std::move(r->gold_mask)};
    item.context = r->description + (task.shots > 0 ? shots_text(spec, pool, task.shots, static_cast<int64_t>(i), opts.fewshot_seed) : "") + r->context;
    for (const auto& c : r->choices) {
      item.continuations.push_back(spec.target_delimiter + c);
      item.choice_bytes.push_back(static_cast<int64_t>(c.size()));
    }
    task.items.push_back(std::move(item));
  }
  group.items = static_cast<int64_t>(task.items.size()) - group.first_item;
  if (group.items == 0) return invalid_argument("task {}: no valid items in {}", spec.name, file.path.string());
  task.groups.push_back(std::move(group));
  return Status::ok();
}

}  // namespace

Result<RenderedRow> render_row(const TaskSpec& spec, const Doc& doc) {
  RenderedRow r;
  ASSIGN_OR_RETURN(r.description, spec.description.render(doc));
  ASSIGN_OR_RETURN(r.context, spec.context.render(doc));
  ASSIGN_OR_RETURN(std::vector<std::string> raw, choices_of(spec, doc));
  if (raw.size() < 2) return invalid_argument("{} choice(s), at least 2 needed", raw.size());
  for (size_t i = 0; i < raw.size(); ++i) {
    ASSIGN_OR_RETURN(std::string c, spec.choice.render(doc, {{"choice", raw[i]}}));
    if (c.empty()) return invalid_argument("choice {} is empty", i);
    r.choices.push_back(std::move(c));
  }
  if (spec.gold.kind == GoldKind::kMask) {
    ASSIGN_OR_RETURN(r.gold_mask, gold_mask_of(spec.gold, doc, r.choices.size()));
    if (std::count(r.gold_mask.begin(), r.gold_mask.end(), 1) == 1)
      r.gold = static_cast<int>(std::find(r.gold_mask.begin(), r.gold_mask.end(), 1) - r.gold_mask.begin());
  } else {
    ASSIGN_OR_RETURN(r.gold, gold_index_of(spec.gold, doc, r.choices.size()));
  }
  return r;
}

Result<std::vector<DataFile>> expand_data_path(const std::string& path, const std::filesystem::path& data_dir) {
  ASSIGN_OR_RETURN(std::string placeholder, path_placeholder(path));
  const std::filesystem::path full = resolve(path, data_dir);
  if (placeholder.empty()) {
    if (!std::filesystem::is_regular_file(full)) return not_found("data file {} does not exist (--data-dir)", full.string());
    return std::vector<DataFile>{{"", full}};
  }
  const std::string name = full.filename().string();
  const std::string prefix = name.substr(0, name.find('{'));
  const std::string suffix = name.substr(name.find('}') + 1);
  std::vector<DataFile> files;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(full.parent_path(), ec)) {
    const std::string f = e.path().filename().string();
    if (f.size() > prefix.size() + suffix.size() && f.starts_with(prefix) && f.ends_with(suffix))
      files.push_back({f.substr(prefix.size(), f.size() - prefix.size() - suffix.size()), e.path()});
  }
  if (files.empty()) return not_found("no data file matches {} (--data-dir)", full.string());
  std::sort(files.begin(), files.end(), [](const DataFile& a, const DataFile& b) { return a.group < b.group; });
  return files;
}

Result<TaskInstance> build_task(const TaskSpec& spec, const TaskBuildOptions& opts) {
  TaskInstance task;
  task.name = spec.name;
  task.split = spec.split;
  task.shots = opts.shots >= 0 ? opts.shots : spec.fewshot.count;
  if (task.shots > 0 && !spec.fewshot.source)
    return invalid_argument("task {}: {} few-shot examples requested but {} defines no few-shot pool", spec.name,
                            task.shots, spec.file.empty() ? "the task file" : spec.file.string());
  ASSIGN_OR_RETURN(std::vector<DataFile> files, expand_data_path(spec.dataset.path, opts.data_dir));
  for (const DataFile& f : files) RETURN_IF_ERROR(build_group(spec, opts, f, task));
  return task;
}

}  // namespace compactor
