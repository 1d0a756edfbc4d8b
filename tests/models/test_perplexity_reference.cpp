// WikiText-2 perplexity of both fixture models against ../shared/reference/*/eval_summary.json
// (ctx 512, BOS + 511 tokens per window): window and prediction counts exact, ppl within 0.1%.
// The whole test file is evaluated (~335k tokens per model), so this ring takes a few minutes.
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "eval/perplexity.h"
#include "io/text_file.h"
#include "support/fixtures.h"
#include "tokenizer/tokenizer.h"

namespace compactor {
namespace {

class WikitextPerplexity : public ::testing::TestWithParam<std::string> {};

TEST_P(WikitextPerplexity, MatchesReference) {
  std::ifstream in(test::reference_dir(GetParam()) / "eval_summary.json");
  const auto ref = nlohmann::json::parse(in)["wikitext2"];
  auto backend = std::move(make_backend(BackendKind::kCpu)).value();
  auto model = Model::load(test::model_dir(GetParam()), *backend);
  ASSERT_TRUE(model.is_ok()) << model.status().message();
  auto tok = load_tokenizer(test::model_dir(GetParam()));
  ASSERT_TRUE(tok.is_ok()) << tok.status().message();
  auto text = read_text_file(test::shared_dir() / "data/wikitext2/wiki.test.raw");
  ASSERT_TRUE(text.is_ok());
  std::vector<int32_t> tokens = (*tok)->encode(*text, false);
  EXPECT_EQ(static_cast<int64_t>(tokens.size()), ref["total_text_tokens"].get<int64_t>());
  PerplexityOptions opts;
  opts.ctx = 512;
  opts.quiet = true;
  auto r = evaluate_perplexity(**model, tokens, (*tok)->bos_id(), opts);
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  EXPECT_EQ(r->windows, ref["windows"].get<int64_t>());
  EXPECT_EQ(r->predictions, ref["predicted_tokens"].get<int64_t>());
  const double ref_ppl = ref["ppl"].get<double>();
  EXPECT_NEAR(r->ppl, ref_ppl, 1e-3 * ref_ppl) << "reference " << ref_ppl;
  std::printf("[%s] ppl %.4f (reference %.4f, rel diff %.2e), %lld windows, %.1f s\n", GetParam().c_str(), r->ppl,
              ref_ppl, std::fabs(r->ppl - ref_ppl) / ref_ppl, static_cast<long long>(r->windows), r->seconds);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, WikitextPerplexity, ::testing::Values("fixture-llama-sp", "fixture-llama-bpe"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& c : n) if (c == '-') c = '_';
                           return n;
                         });

}  // namespace
}  // namespace compactor
