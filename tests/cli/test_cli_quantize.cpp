// `compactor quantize --method nf4` (tools/compactor/quantize_nf4.h): fixture-llama-sp to NF4 with
// perplexity on the first wikitext2 windows, compared with RTN w4g64 on the same windows (both
// printed); bits per weight; the output directory's quantization_config; --override selecting
// lm_head and keeping down_proj dense on stories260K; flags that do not apply are refused.
// Run: build-*/tests/test_cli_quantize
#include <cmath>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "support/cli_run.h"
#include "support/fixtures.h"

namespace compactor {
namespace {

namespace fs = std::filesystem;

class QuantizeCli : public ::testing::Test {
 protected:
  void SetUp() override { tmp_ = test::make_temp_dir("compactor-quantize-cli"); }
  void TearDown() override { fs::remove_all(tmp_); }
  test::CliResult run(const std::string& args) { return test::run_cli(args + " --no-record", tmp_); }
  nlohmann::json config(const fs::path& dir) {
    std::ifstream in(dir / "config.json");
    return nlohmann::json::parse(in);
  }
  fs::path tmp_;
};

double wikitext_ppl(const nlohmann::json& j) { return j["summary"]["ppl"]["wikitext2"]["ppl"].get<double>(); }

TEST_F(QuantizeCli, NF4FixtureLlamaSpPerplexityCloseToRtnW4G64) {
  const std::string model = test::model_dir("fixture-llama-sp").string();
  const std::string eval = " --eval wikitext2 --limit-windows 4 --eval-ctx 256 --json --quiet";
  const fs::path nf4_dir = tmp_ / "nf4", rtn_dir = tmp_ / "rtn";
  test::CliResult nf4 = run("quantize " + model + " " + nf4_dir.string() + " --method nf4" + eval + " --eval-base");
  ASSERT_EQ(nf4.exit_code, 0) << nf4.err;
  test::CliResult rtn = run("quantize " + model + " " + rtn_dir.string() + " --method rtn --bits 4 --group 64 --calib none" + eval);
  ASSERT_EQ(rtn.exit_code, 0) << rtn.err;
  const auto jn = nlohmann::json::parse(nf4.out), jr = nlohmann::json::parse(rtn.out);
  const double base = jn["summary"]["base_ppl"]["wikitext2"]["ppl"].get<double>();
  const double p_nf4 = wikitext_ppl(jn), p_rtn = wikitext_ppl(jr);
  std::printf("fixture-llama-sp wikitext2 (4 windows of 256): base %.3f, nf4 %.3f, rtn w4g64 %.3f\n", base, p_nf4,
              p_rtn);
  ASSERT_TRUE(std::isfinite(p_nf4));
  EXPECT_LT(std::fabs(p_nf4 - p_rtn) / p_rtn, 0.05);
  EXPECT_GE(p_nf4, base * 0.99);
  EXPECT_NEAR(jn["summary"]["bits_per_weight_linears"].get<double>(), 4.127, 0.002);
  EXPECT_EQ(jn["summary"]["group_size"], 64);
  ASSERT_EQ(jn["layers"].size(), 56u);  // 8 layers x 7 linears, lm_head kept
  for (const auto& l : jn["layers"]) {
    EXPECT_EQ(l["format"], "nf4");
    EXPECT_GT(l["weight_rel_error"].get<double>(), 0.0);
    EXPECT_LT(l["weight_rel_error"].get<double>(), 0.02) << l.dump();
  }
  const auto q = config(nf4_dir)["quantization_config"];
  EXPECT_EQ(q["format"], "nf4");
  EXPECT_EQ(q["group_size"], 64);
  EXPECT_FALSE(q["modules"].contains("lm_head"));
}

TEST_F(QuantizeCli, NF4OverridesSelectModulesAndBlockSize) {
  const fs::path out = tmp_ / "stories";
  test::CliResult r = run("quantize " + test::model_dir("stories260K").string() + " " + out.string() +
                          " --method nf4 --group 32 --override lm_head=nf4 --override '*.down_proj=keep' --json --quiet");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["layers"].size(), 5u * 6 + 1);
  const auto q = config(out)["quantization_config"];
  ASSERT_TRUE(q["modules"].contains("lm_head"));
  EXPECT_EQ(q["modules"]["lm_head"]["format"], "nf4");
  EXPECT_EQ(q["modules"]["lm_head"]["group_size"], 32);
  EXPECT_FALSE(q["modules"].contains("model.layers.0.mlp.down_proj"));
  test::CliResult info = test::run_cli("info " + out.string(), tmp_);
  EXPECT_EQ(info.exit_code, 0) << info.err;
}

TEST_F(QuantizeCli, NF4RefusesFlagsThatDoNotApply) {
  const std::string base = "quantize " + test::model_dir("stories260K").string() + " " + (tmp_ / "x").string() +
                           " --method nf4 ";
  test::CliResult r = run(base + "--act-order");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--act-order does not apply to --method nf4"), std::string::npos) << r.err;
  r = run(base + "--bits 3");
  EXPECT_NE(r.err.find("--bits does not apply"), std::string::npos) << r.err;
  r = run(base + "--override '*.o_proj=w8'");
  EXPECT_NE(r.err.find("--override '*.o_proj=w8': --method nf4 takes PATTERN=nf4"), std::string::npos) << r.err;
  r = run(base + "--group 0");
  EXPECT_NE(r.err.find("--group 0"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(tmp_ / "x"));
}

}  // namespace
}  // namespace compactor
