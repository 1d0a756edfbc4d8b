// PTQ quality on the real fixture-llama-sp with a small calibration set (C4, 16 × 256 tokens):
// GPTQ's per-layer output error ≤ RTN's on every linear (same inputs), GPTQ w4g128 beats RTN on
// in-domain perplexity, and at 3 bits (g128) AWQ beats RTN too. Perplexity on the first windows of
// ../shared/data/fixture-val/val.txt (ctx 512) to keep the file near half a minute on 2 cores.
// Run: build-comp/tests/test_ptq_quality
#include <gtest/gtest.h>

#include "compress/calibration.h"
#include "compress/ptq.h"
#include "eval/perplexity.h"
#include "io/text_file.h"
#include "support/fixtures.h"
#include "tokenizer/tokenizer.h"

namespace compactor {
namespace {

constexpr int kWindows = 8;

struct Fixture {
  std::unique_ptr<Backend> backend = std::move(make_backend(BackendKind::kCpu)).value();
  std::unique_ptr<Tokenizer> tokenizer = std::move(load_tokenizer(test::model_dir("fixture-llama-sp"))).value();
  std::unique_ptr<Model> model = std::move(Model::load(test::model_dir("fixture-llama-sp"), *backend)).value();

  CalibrationSet calibration() const {
    CalibrationOptions o;
    o.file = test::shared_dir() / "data/calibration/c4.utf8";
    o.samples = 16;
    o.seqlen = 256;
    o.seed = 0;
    return std::move(load_calibration(o, *tokenizer)).value();
  }

  double perplexity() {
    static const std::string text = std::move(read_text_file(test::shared_dir() / "data/fixture-val/val.txt")).value();
    const std::vector<int32_t> ids = tokenizer->encode(std::string_view(text).substr(0, 200000), false);
    PerplexityOptions p;
    p.limit_windows = kWindows;
    p.quiet = true;
    return std::move(evaluate_perplexity(*model, ids, tokenizer->bos_id(), p)).value().ppl;
  }
};

PtqOptions options(PtqMethod method, int bits) {
  PtqOptions o;
  o.method = method;
  o.spec = QuantSpec{bits, 128, false};
  o.quiet = true;
  return o;
}

double rtn_perplexity(int bits) {
  Fixture f;
  auto r = quantize_model(*f.model, nullptr, options(PtqMethod::kRtn, bits));
  COMPACTOR_ASSERT(r.is_ok(), "{}", r.status().message());
  return f.perplexity();
}

TEST(PtqQuality, GptqBeatsRtnOnEveryLayerAndOnPerplexityAt4Bits) {
  Fixture f;
  const CalibrationSet calib = f.calibration();
  auto r = quantize_model(*f.model, &calib, options(PtqMethod::kGptq, 4));
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  ASSERT_EQ(r->linears.size(), 8u * 7u);
  for (const LinearReport& l : r->linears) {
    EXPECT_GT(l.rel_error, 0.0) << l.module;
    EXPECT_LE(l.rel_error, l.rtn_rel_error) << l.module;
    EXPECT_LT(l.rtn_rel_error, 0.05) << l.module;  // 4-bit g128 is a small perturbation
  }
  const double gptq = f.perplexity();
  const double rtn = rtn_perplexity(4);
  std::printf("fixture-llama-sp fixture-val (%d windows) w4g128: gptq %.4f rtn %.4f\n", kWindows, gptq, rtn);
  EXPECT_LT(gptq, rtn);
}

TEST(PtqQuality, AwqBeatsRtnOnPerplexityAt3Bits) {
  Fixture f;
  const CalibrationSet calib = f.calibration();
  auto r = quantize_model(*f.model, &calib, options(PtqMethod::kAwq, 3));
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  for (const LinearReport& l : r->linears)
    if (l.linear != "o") EXPECT_GE(l.awq_alpha, 0.f) << l.module;  // GQA: no v → o fold, no o search
  const double awq = f.perplexity();
  const double rtn = rtn_perplexity(3);
  std::printf("fixture-llama-sp fixture-val (%d windows) w3g128: awq %.4f rtn %.4f\n", kWindows, awq, rtn);
  EXPECT_LT(awq, rtn);
}

}  // namespace
}  // namespace compactor
