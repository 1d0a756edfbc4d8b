// compactor runs [--store runs.db] [--command eval] [--model SUBSTR] [--limit N] [--json]:
// lists the run records of the store, newest first, with their metrics.
#include <cstdio>

#include "common.h"
#include "exp/run_store.h"

namespace compactor::cli {

namespace {
struct RunsOptions {
  std::string store = "runs.db", command, model;
  int limit = 20;
  bool json = false;
};

std::string metric_summary(const RunRecord& r) {
  std::string s;
  for (const Metric& m : r.metrics) {
    if (s.size() > 60) { s += " ..."; break; }
    s += fmt::format("{}{}={:.4g}", s.empty() ? "" : " ", m.name, m.value);
  }
  return s;
}

int run(const RunsOptions& o) {
  if (!std::filesystem::exists(o.store)) return fail(not_found("run store '{}' does not exist", o.store));
  auto store = RunStore::open(o.store);
  if (!store) return fail(store.status());
  auto runs = store->list(RunFilter{o.command, o.model, o.limit});
  if (!runs) return fail(runs.status());
  if (o.json) {
    nlohmann::json j = nlohmann::json::array();
    for (const RunRecord& r : *runs) j.push_back(to_json(r));
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("%-26s %-8s %-20s %-32s %s\n", "id", "command", "started", "model", "metrics");
  for (const RunRecord& r : *runs)
    std::printf("%-26s %-8s %-20s %-32s %s\n", r.id.c_str(), r.command.c_str(), r.started_at.substr(0, 19).c_str(),
                std::filesystem::path(r.model_path).filename().c_str(), metric_summary(r).c_str());
  return 0;
}
}  // namespace

Command make_runs_command(CLI::App& root) {
  auto opts = std::make_shared<RunsOptions>();
  CLI::App* app = root.add_subcommand("runs", "list the run records in a run store");
  app->add_option("--store", opts->store, "SQLite run store")->capture_default_str();
  app->add_option("--command", opts->command, "only runs of this command (eval, bench, ...)");
  app->add_option("--model", opts->model, "only runs whose model path contains this");
  app->add_option("--limit", opts->limit, "newest N runs (0 = all)")->capture_default_str();
  app->add_flag("--json", opts->json, "print the full records as JSON");
  return {app, [opts]() { return run(*opts); }};
}

}  // namespace compactor::cli
