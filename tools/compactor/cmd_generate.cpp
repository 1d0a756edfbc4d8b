// compactor generate MODEL --prompt STR [--max-tokens N] [--temperature T] [--top-k K] [--top-p P]
// [--seed S] [--device cpu|cuda]: streams the continuation to stdout, speed to stderr.
#include <cstdio>

#include "common.h"
#include "model/generate.h"

namespace compactor::cli {

namespace {
struct GenerateCliOptions {
  std::string model, prompt;
  int max_tokens = 64;
  float temperature = 0.0f, top_p = 1.0f;
  int top_k = 0;
  uint64_t seed = 0;
  bool no_bos = false, ignore_eos = false;
  CommonOptions common;
};

int run_generate(const GenerateCliOptions& o) {
  auto lm = load_model(o.model, o.common);
  if (!lm) return fail(lm.status());
  const Tokenizer& tok = *lm->tokenizer;
  std::vector<int32_t> prompt = tok.encode(o.prompt, !o.no_bos && tok.add_bos_by_default());
  if (prompt.empty()) return fail(invalid_argument("--prompt is empty and the tokenizer adds no BOS token"));
  GenerateOptions g;
  g.max_tokens = o.max_tokens;
  g.sampling = SamplingParams{o.temperature, o.top_k, o.top_p, o.seed};
  g.stop_at_eos = o.ignore_eos ? StopAtEos::kNo : StopAtEos::kYes;
  g.eos_ids = tok.eos_ids();
  StreamDecoder stream(tok);
  std::string text;
  auto on_token = [&](int32_t id) {
    std::string piece = stream.push(id);
    text += piece;
    if (!o.common.json) {
      std::fputs(piece.c_str(), stdout);
      std::fflush(stdout);
    }
  };
  auto result = generate(*lm->model, prompt, g, on_token);
  if (!result) return fail(result.status());
  text += stream.flush();
  const double decode_tps = result->ids.size() > 1 ? (result->ids.size() - 1) / result->decode_seconds : 0.0;
  if (o.common.json) {
    nlohmann::json j = {{"prompt", o.prompt}, {"prompt_ids", prompt}, {"ids", result->ids}, {"text", text},
                        {"stop_reason", result->stop_reason}, {"prefill_seconds", result->prefill_seconds},
                        {"decode_tokens_per_second", decode_tps}};
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("\n");
    if (!o.common.quiet)
      std::fprintf(stderr, "[%zu prompt tokens in %.3f s, %zu generated at %.1f tokens/s, stop: %s]\n", prompt.size(),
                   result->prefill_seconds, result->ids.size(), decode_tps, result->stop_reason.c_str());
  }
  return 0;
}
}  // namespace

Command make_generate_command(CLI::App& root) {
  auto opts = std::make_shared<GenerateCliOptions>();
  CLI::App* app = root.add_subcommand("generate", "generate text from a prompt (streams to stdout)");
  app->add_option("model", opts->model, "model directory")->required();
  app->add_option("--prompt", opts->prompt, "prompt text")->required();
  app->add_option("--max-tokens", opts->max_tokens, "tokens to generate")->capture_default_str();
  app->add_option("--temperature", opts->temperature, "0 = greedy")->capture_default_str();
  app->add_option("--top-k", opts->top_k, "keep the k most likely tokens (0 = all)")->capture_default_str();
  app->add_option("--top-p", opts->top_p, "nucleus sampling mass (1 = off)")->capture_default_str();
  app->add_option("--seed", opts->seed, "sampling seed")->capture_default_str();
  app->add_flag("--no-bos", opts->no_bos, "do not prepend BOS to the prompt");
  app->add_flag("--ignore-eos", opts->ignore_eos, "keep generating past end-of-sequence tokens");
  add_output_options(app, opts->common);
  app->add_option("--device", opts->common.device, "cpu or cuda")->capture_default_str();
  app->add_option("--threads", opts->common.threads, "CPU threads (default: all cores)");
  return {app, [opts]() {
            if (opts->temperature < 0) return fail(invalid_argument("--temperature must be >= 0"));
            if (opts->top_p <= 0 || opts->top_p > 1) return fail(invalid_argument("--top-p must be in (0, 1]"));
            if (opts->top_k < 0) return fail(invalid_argument("--top-k must be >= 0"));
            return run_generate(*opts);
          }};
}

}  // namespace compactor::cli
