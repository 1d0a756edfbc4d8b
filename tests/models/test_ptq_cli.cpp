// `compactor quantize` end to end: the JSON report (per-layer errors, timing, peak memory, bits
// per weight, file size), OUT loadable by every command, recipes, and bad input (calibration set
// smaller than requested, documents shorter than L, group not dividing the width, unsupported bit
// width, L beyond the model, an existing OUT, a run interrupted by a signal): a clear message, a
// non-zero exit, and no OUT directory.
// Run: build-comp/tests/test_ptq_cli
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "support/cli_run.h"
#include "support/fixtures.h"

namespace compactor {
namespace {

using test::CliResult;
using test::run_cli;

std::string model(const std::string& name) { return test::model_dir(name).string(); }
std::string data(const std::string& rel) { return (test::shared_dir() / "data" / rel).string(); }

class QuantizeCli : public ::testing::Test {
 protected:
  void SetUp() override { tmp_ = test::make_temp_dir("compactor-quantize-cli"); }
  void TearDown() override { std::filesystem::remove_all(tmp_); }
  CliResult run(const std::string& args) { return run_cli(args + " --no-record", tmp_); }
  std::string out() const { return (tmp_ / "out").string(); }
  std::filesystem::path tmp_;
};

TEST_F(QuantizeCli, GptqJsonReportAndOutIsAModel) {
  CliResult r = run("quantize " + model("stories260K") + " " + out() + " --method gptq --bits 4 --group 32 " +
                    "--override '*.down_proj=w4' --act-order --calib " + data("calibration/tiny.utf8") + " --calib-samples 8 --calib-seqlen 128 " +
                    "--seed 3 --json --quiet");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  const auto& s = j["summary"];
  EXPECT_EQ(s["method"], "gptq");
  EXPECT_EQ(s["quantized_linears"], 5 * 7);
  EXPECT_GT(s["seconds"].get<double>(), 0.0);
  EXPECT_GT(s["peak_rss_mb"].get<double>(), 1.0);
  EXPECT_GT(s["file_bytes"].get<int64_t>(), 0);
  EXPECT_NEAR(s["bits_per_weight_linears"].get<double>(), 5.0, 0.6);  // g32 scales/zeros + g_idx on tiny widths
  EXPECT_EQ(s["layer_seconds"].size(), 5u);
  EXPECT_EQ(j["calibration"]["samples"], 8);
  EXPECT_EQ(j["calibration"]["sha256"].get<std::string>().size(), 64u);
  ASSERT_EQ(j["layers"].size(), 35u);
  for (const auto& l : j["layers"]) {
    EXPECT_LE(l["rel_error"].get<double>(), l["rtn_rel_error"].get<double>()) << l["module"];
    // down_proj (K = 172) is per-channel by the override: no groups, so no g_idx.
    const bool down = l["module"].get<std::string>().find("down_proj") != std::string::npos;
    EXPECT_EQ(l["act_order"].get<bool>(), !down) << l["module"];
    EXPECT_EQ(l["group_size"].get<int>(), down ? 0 : 32) << l["module"];
  }
  CliResult info = run_cli("info " + out() + " --json", tmp_);
  ASSERT_EQ(info.exit_code, 0) << info.err;
  CliResult eval = run("eval " + out() + " --data " + data("calibration/tiny.utf8") + " --ctx 128 --limit-windows 2 --json --quiet");
  ASSERT_EQ(eval.exit_code, 0) << eval.err;
  EXPECT_LT(nlohmann::json::parse(eval.out)["ppl"].get<double>(), 100.0);
  EXPECT_TRUE(std::filesystem::exists(std::filesystem::path(out()) / "compactor.json"));
}

TEST_F(QuantizeCli, RecipeAndOverrides) {
  CliResult r = run("quantize " + model("stories260K") + " " + out() + " --recipe " +
                    (test::source_dir() / "configs/recipes/rtn-w8.yaml").string() +
                    " --override '*.down_proj=fp16' --json --quiet");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["summary"]["method"], "rtn");
  EXPECT_EQ(j["summary"]["quantized_linears"], 5 * 6);
  for (const auto& l : j["layers"]) {
    EXPECT_EQ(l["bits"], 8);
    EXPECT_EQ(l["group_size"], 0);
    EXPECT_EQ(l["module"].get<std::string>().find("down_proj"), std::string::npos);
  }
}

// Every bad input: non-zero exit, "error:" with the named cause, and nothing at OUT.
void expect_clean_failure(QuantizeCli& t, const CliResult& r, const std::string& needle, const std::string& out) {
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("error:"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(out));
}

TEST_F(QuantizeCli, BadInputIsANamedErrorWithNoOutput) {
  const std::string base = "quantize " + model("stories260K") + " " + out() + " --quiet ";
  expect_clean_failure(*this, run(base + "--per-channel --calib " + data("calibration/tiny.utf8") +
                                  " --calib-samples 100000 --calib-seqlen 128"), "smaller than requested", out());
  expect_clean_failure(*this, run(base + "--per-channel --calib " + data("calibration/c4_demo.jsonl") +
                                  " --calib-samples 300 --calib-seqlen 512"), "shorter than", out());
  expect_clean_failure(*this, run(base + "--group 128 --calib none --method rtn"), "does not divide", out());
  expect_clean_failure(*this, run(base + "--bits 5 --per-channel --calib none --method rtn"), "5-bit", out());
  expect_clean_failure(*this, run(base + "--per-channel --calib tiny --calib-seqlen 1024"), "1024", out());
  expect_clean_failure(*this, run(base + "--method foo"), "rtn, gptq or awq", out());
  expect_clean_failure(*this, run(base + "--method gptq --per-channel --calib none"), "calibration", out());
  expect_clean_failure(*this, run(base + "--per-channel --override 'x=w7'"), "7-bit", out());
  // An existing OUT is left alone.
  std::filesystem::create_directories(out());
  std::ofstream(std::filesystem::path(out()) / "keep.txt") << "mine";
  CliResult exists = run(base + "--per-channel --calib none --method rtn");
  EXPECT_NE(exists.exit_code, 0);
  EXPECT_NE(exists.err.find("already exists"), std::string::npos) << exists.err;
  EXPECT_TRUE(std::filesystem::exists(std::filesystem::path(out()) / "keep.txt"));
}

// Interrupted after the first block: no OUT appears (the directory is only built at the end,
// atomically).
TEST_F(QuantizeCli, InterruptedRunLeavesNoOutput) {
  int err_pipe[2];
  ASSERT_EQ(pipe(err_pipe), 0);
  const std::string bin = test::binary_path().string(), m = model("fixture-llama-sp"), o = out(),
                    calib = data("calibration/c4.utf8");
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    dup2(err_pipe[1], 2);
    close(err_pipe[0]);
    execl(bin.c_str(), bin.c_str(), "quantize", m.c_str(), o.c_str(), "--method", "gptq", "--calib", calib.c_str(),
          "--calib-samples", "16", "--calib-seqlen", "256", "--no-record", static_cast<char*>(nullptr));
    _exit(127);
  }
  close(err_pipe[1]);
  FILE* err = fdopen(err_pipe[0], "r");
  char line[1024];
  bool first_block_done = false;
  while (!first_block_done && fgets(line, sizeof line, err) != nullptr)
    first_block_done = std::string(line).find("layer 0 done") != std::string::npos;
  ASSERT_TRUE(first_block_done);
  kill(pid, SIGINT);
  int status = 0;
  waitpid(pid, &status, 0);
  fclose(err);
  EXPECT_TRUE(WIFSIGNALED(status) || WEXITSTATUS(status) != 0);
  EXPECT_FALSE(std::filesystem::exists(o));
}

}  // namespace
}  // namespace compactor
