// compactor bench MODEL [--device cpu|cuda] [--batch 1,8] [--prompt N] [--gen N] [--repeats R]:
// prefill and decode throughput, time to first token and peak memory, as a table or JSON.
#include <cstdio>

#include "bench/bench.h"
#include "common.h"
#include "core/hardware.h"

namespace compactor::cli {

namespace {
struct BenchCliOptions {
  std::string model;
  std::vector<int> batches{1};
  int prompt = 128, gen = 32, repeats = 3;
  uint64_t seed = 0;
  CommonOptions common;
};

nlohmann::json to_json(const BenchResult& r, int64_t peak_rss) {
  nlohmann::json points = nlohmann::json::array();
  for (const BenchPoint& p : r.points)
    points.push_back({{"batch", p.batch}, {"prompt", p.prompt}, {"gen", p.gen},
                      {"ttft_ms", p.prefill_seconds * 1000}, {"prefill_tokens_per_second", p.prefill_tokens_per_second},
                      {"decode_tokens_per_second", p.decode_tokens_per_second},
                      {"ms_per_decode_step", p.ms_per_decode_step}});
  return {{"points", points}, {"weight_bytes", r.weight_bytes}, {"peak_kv_bytes", r.peak_kv_bytes},
          {"peak_rss_bytes", peak_rss}};
}

int run(const BenchCliOptions& o, const CLI::App& app) {
  RunRecord record = new_run_record("bench");
  auto lm = load_model(o.model, o.common);
  if (!lm) return fail(lm.status());
  BenchConfig cfg{o.batches, o.prompt, o.gen, o.repeats, o.seed};
  auto r = run_bench(*lm->model, cfg);
  if (!r) return fail(r.status());
  nlohmann::json j = to_json(*r, peak_rss_bytes());
  j["device"] = lm->backend->name();
  for (const BenchPoint& p : r->points) {
    const std::string b = "b" + std::to_string(p.batch);
    record.metrics.push_back(Metric{b + ".ttft_ms", p.prefill_seconds * 1000, {}, {}, {}, "ms"});
    record.metrics.push_back(Metric{b + ".prefill_tps", p.prefill_tokens_per_second, {}, {}, {}, "tokens/s"});
    record.metrics.push_back(Metric{b + ".decode_tps", p.decode_tokens_per_second, {}, {}, {}, "tokens/s"});
  }
  record.metrics.push_back(Metric{"peak_rss_bytes", static_cast<double>(peak_rss_bytes()), {}, {}, {}, "bytes"});
  record.details = j;
  Status saved = save_record(record, o.common, o.model, app);
  if (!saved.is_ok()) return fail(saved);
  if (o.common.json) {
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("device %s, weights %.1f MB, peak RSS %.1f MB\n", j["device"].get<std::string>().c_str(),
              r->weight_bytes / 1e6, peak_rss_bytes() / 1e6);
  std::printf("%6s %7s %5s %10s %16s %16s %12s\n", "batch", "prompt", "gen", "TTFT ms", "prefill tok/s", "decode tok/s",
              "ms/step");
  for (const BenchPoint& p : r->points)
    std::printf("%6d %7d %5d %10.2f %16.1f %16.1f %12.2f\n", p.batch, p.prompt, p.gen, p.prefill_seconds * 1000,
                p.prefill_tokens_per_second, p.decode_tokens_per_second, p.ms_per_decode_step);
  return 0;
}
}  // namespace

Command make_bench_command(CLI::App& root) {
  auto opts = std::make_shared<BenchCliOptions>();
  CLI::App* app = root.add_subcommand("bench", "measure prefill/decode speed and memory");
  app->add_option("model", opts->model, "model directory")->required();
  app->add_option("--batch", opts->batches, "comma-separated batch sizes")->delimiter(',')->capture_default_str();
  app->add_option("--prompt", opts->prompt, "prompt tokens per sequence")->capture_default_str();
  app->add_option("--gen", opts->gen, "generated tokens per sequence")->capture_default_str();
  app->add_option("--repeats", opts->repeats, "timed repeats (median reported)")->capture_default_str();
  app->add_option("--seed", opts->seed, "seed of the random token ids")->capture_default_str();
  add_common_options(app, opts->common);
  return {app, [opts, app]() { return run(*opts, *app); }};
}

}  // namespace compactor::cli
