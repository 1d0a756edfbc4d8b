// `compactor quantize` phase report and the synthetic benchmark's argument handling (CPU build or
// CPU device): the JSON summary's `phases` (calibration forward, statistics, Cholesky, sweep, error
// measurement, write-back, packing, total) and `device`/`gpu_memory`; `--synthetic` needs
// `--device cuda` (a clear error otherwise), takes no MODEL directory, and its positional OUT is
// not written. The GPU run itself: tests/cuda/test_cuda_gptq.cpp and the README's benchmark line.
// Run: build-*/tests/test_cli_quantize_phases
#include <sys/wait.h>

#include <cstdio>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "support/fixtures.h"

namespace compactor {
namespace {

struct CliResult {
  int exit_code = -1;
  std::string out, err;
};

class QuantizePhasesCli : public ::testing::Test {
 protected:
  void SetUp() override { tmp_ = test::make_temp_dir("compactor-quantize-phases"); }
  void TearDown() override { std::filesystem::remove_all(tmp_); }

  CliResult run(const std::string& args) {
    const auto err_path = tmp_ / "stderr.txt";
    const std::string cmd = test::binary_path().string() + " " + args + " --no-record 2>" + err_path.string();
    CliResult r;
    FILE* pipe = popen(cmd.c_str(), "r");
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, pipe)) > 0) r.out.append(buf, n);
    const int status = pclose(pipe);
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    std::ifstream e(err_path);
    r.err.assign(std::istreambuf_iterator<char>(e), {});
    return r;
  }
  std::filesystem::path tmp_;
};

TEST_F(QuantizePhasesCli, JsonSummaryHasEveryPhase) {
  const std::string calib = (test::shared_dir() / "data" / "calibration" / "tiny.utf8").string();
  CliResult r = run("quantize " + test::model_dir("stories260K").string() + " --no-save --method gptq --bits 4 " +
                    "--group 4 --calib " + calib + " --calib-samples 4 --calib-seqlen 64 --json --quiet");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  const auto& s = j["summary"];
  EXPECT_EQ(s["device"], "cpu");
  EXPECT_TRUE(s["gpu_memory"].is_null());
  EXPECT_EQ(s["solvers_on_gpu"], false);
  const auto& p = s["phases"];
  for (const char* key : {"embed_s", "calibration_forward_s", "statistics_s", "cholesky_s", "sweep_s",
                          "error_measurement_s", "write_back_s", "other_s", "quantize_s", "pack_s", "total_s"}) {
    ASSERT_TRUE(p.contains(key)) << key << " missing in " << p.dump();
    EXPECT_GE(p[key].get<double>(), 0.0) << key;
  }
  EXPECT_GT(p["calibration_forward_s"].get<double>(), 0.0);
  EXPECT_GT(p["sweep_s"].get<double>(), 0.0);  // the CPU solver's time is the sweep's
  EXPECT_NEAR(p["total_s"].get<double>(), p["quantize_s"].get<double>() + p["pack_s"].get<double>(), 1e-9);
  double parts = 0;
  for (const char* key : {"embed_s", "calibration_forward_s", "statistics_s", "cholesky_s", "sweep_s",
                          "error_measurement_s", "write_back_s", "other_s"})
    parts += p[key].get<double>();
  EXPECT_NEAR(parts, p["quantize_s"].get<double>(), 1e-6 + 1e-3 * p["quantize_s"].get<double>());
}

TEST_F(QuantizePhasesCli, SyntheticNeedsTheGpuAndSavesNothing) {
  const std::string out = (tmp_ / "out").string();
  CliResult r = run("quantize --synthetic tiny " + out + " --method gptq --group 16 --calib-samples 2 --calib-seqlen 64");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--device cuda"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("not written"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(out));
  r = run("quantize --synthetic no-such-model --device cuda --no-save");
  EXPECT_NE(r.exit_code, 0);
  r = run("quantize --synthetic tiny " + test::model_dir("stories260K").string() + " " + out + " --device cuda");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("takes no MODEL directory"), std::string::npos) << r.err;
  r = run("quantize --no-save");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("MODEL is required"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace compactor
