// compactor tokenize MODEL --text STR | --file F [--bos] [--special] [--json]: token ids of a
// text with the model's tokenizer, and whether decoding them gives the text back.
#include <cstdio>

#include "common.h"
#include "io/text_file.h"

namespace compactor::cli {

namespace {
struct TokenizeOptions {
  std::string model, text, file;
  bool bos = false, special = false;
  CommonOptions common;
};

int run_tokenize(const TokenizeOptions& o) {
  auto tok = load_tokenizer(o.model);
  if (!tok) return fail(tok.status());
  std::string text = o.text;
  if (!o.file.empty()) {
    auto contents = read_text_file(o.file);
    if (!contents) return fail(contents.status());
    text = std::move(*contents);
  }
  std::vector<int32_t> ids = (*tok)->encode(text, o.bos, o.special);
  std::vector<int32_t> body(ids.begin() + ((o.bos && !ids.empty() && ids[0] == (*tok)->bos_id()) ? 1 : 0), ids.end());
  const std::string decoded = (*tok)->decode(body, !o.special);
  const bool round_trip = decoded == text;
  if (o.common.json) {
    nlohmann::json j = {{"ids", ids}, {"count", ids.size()}, {"round_trip", round_trip}};
    if (!o.file.empty()) j["file"] = o.file;
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::string line;
    for (size_t i = 0; i < ids.size(); ++i) line += (i ? " " : "") + std::to_string(ids[i]);
    std::printf("%s\n", line.c_str());
    std::fprintf(stderr, "%zu tokens, round trip %s\n", ids.size(), round_trip ? "ok" : "DIFFERS");
  }
  return 0;
}
}  // namespace

Command make_tokenize_command(CLI::App& root) {
  auto opts = std::make_shared<TokenizeOptions>();
  CLI::App* app = root.add_subcommand("tokenize", "print the token ids of a text and check that they decode back to it");
  app->add_option("model", opts->model, "model directory (its tokenizer.model or tokenizer.json)")->required();
  auto* text = app->add_option("--text", opts->text, "text to tokenize");
  auto* file = app->add_option("--file", opts->file, "file whose contents to tokenize");
  text->excludes(file);
  app->add_flag("--bos", opts->bos, "prepend the BOS token");
  app->add_flag("--special", opts->special, "match special-token text (e.g. <|im_start|>) as single tokens");
  add_output_options(app, opts->common);
  return {app, [opts, text, file]() {
            if (text->count() == 0 && file->count() == 0) return fail(invalid_argument("tokenize: give --text or --file"));
            return run_tokenize(*opts);
          }};
}

}  // namespace compactor::cli
