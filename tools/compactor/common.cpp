#include "common.h"

#include <cstdio>

#include <cblas.h>
#include <omp.h>

#include "datasets.h"
#include "eval/perplexity.h"
#include "exp/recipe.h"
#include "exp/run_store.h"
#include "io/text_file.h"

namespace compactor::cli {

void add_output_options(CLI::App* app, CommonOptions& o) {
  app->add_flag("--json", o.json, "print the result as JSON on stdout");
  app->add_flag("--quiet", o.quiet, "no progress on stderr");
}

void add_common_options(CLI::App* app, CommonOptions& o) {
  add_output_options(app, o);
  app->add_option("--device", o.device, "cpu or cuda")->capture_default_str();
  app->add_option("--store", o.store, "SQLite run store the run record is appended to")->capture_default_str();
  app->add_option("--record-dir", o.record_dir, "also write the run record as JSON into this directory");
  app->add_flag("--no-record", o.no_record, "do not append a run record to the store");
  app->add_option("--threads", o.threads, "CPU threads (default: all cores)");
}

void apply_threads(int threads) {
  if (threads <= 0) return;
  omp_set_num_threads(threads);
  openblas_set_num_threads(threads);
}

Result<LoadedModel> load_model(const std::string& dir, const CommonOptions& o) {
  apply_threads(o.threads);
  LoadedModel lm;
  ASSIGN_OR_RETURN(BackendKind kind, backend_kind_from_name(o.device));
  ASSIGN_OR_RETURN(lm.backend, make_backend(kind));
  ASSIGN_OR_RETURN(lm.model, Model::load(dir, *lm.backend));
  ASSIGN_OR_RETURN(lm.tokenizer, load_tokenizer(dir));
  if (lm.tokenizer->vocab_size() > lm.model->config().vocab_size)
    return invalid_argument("{}: the tokenizer has {} tokens but config.json's vocab_size is {}", dir,
                            lm.tokenizer->vocab_size(), lm.model->config().vocab_size);
  return lm;
}

Status save_record(RunRecord& record, const CommonOptions& o, const std::string& model_dir, const CLI::App& app) {
  record.args = options_to_json(app);
  record.model_path = model_dir;
  if (!o.record_dir.empty()) {
    std::filesystem::create_directories(o.record_dir);
  }
  if (o.no_record) {
    if (!o.record_dir.empty()) {
      if (!model_dir.empty()) { ASSIGN_OR_RETURN(record.model_hash, model_content_hash(model_dir)); }
      RETURN_IF_ERROR(write_run_record(record, o.record_dir));
    }
    return Status::ok();
  }
  ASSIGN_OR_RETURN(RunStore store, RunStore::open(o.store));
  if (!model_dir.empty()) { ASSIGN_OR_RETURN(record.model_hash, store.model_content_hash(model_dir)); }
  if (!o.record_dir.empty()) RETURN_IF_ERROR(write_run_record(record, o.record_dir));
  return store.append(record);
}

int fail(const Status& status) {
  std::fprintf(stderr, "compactor: error: %s\n", status.message().c_str());
  return 1;
}

int64_t directory_bytes(const std::filesystem::path& dir) {
  int64_t total = 0;
  std::error_code ec;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir, ec))
    if (e.is_regular_file()) total += static_cast<int64_t>(e.file_size());
  return total;
}

Result<nlohmann::json> perplexity_records(LoadedModel& lm, const std::vector<std::string>& datasets, int ctx,
                                          int64_t limit_windows, bool quiet) {
  nlohmann::json out = nlohmann::json::object();
  for (const std::string& d : datasets) {
    ASSIGN_OR_RETURN(std::filesystem::path path, resolve_dataset(d));
    ASSIGN_OR_RETURN(std::string text, read_text_file(path));
    PerplexityOptions p;
    p.ctx = ctx;
    p.limit_windows = limit_windows;
    p.quiet = quiet;
    ASSIGN_OR_RETURN(PerplexityResult r, evaluate_perplexity(*lm.model, lm.tokenizer->encode(text, false),
                                                             lm.tokenizer->bos_id(), p));
    out[d] = {{"data", d}, {"path", path.string()}, {"ppl", r.ppl}, {"mean_nll", r.mean_nll},
              {"windows", r.windows}, {"tokens", r.predictions}, {"ctx", ctx}};
  }
  return out;
}

}  // namespace compactor::cli
