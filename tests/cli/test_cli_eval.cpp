// `compactor eval` end to end on stories260K: multiple-choice tasks (JSON shape, run records,
// grouped MMLU, task files as data, paired deltas with --base), KL divergence with saved base
// logits, and bad input (clear message naming the file/line or flag, non-zero exit, counted skips).
// Run: build-*/tests/test_cli_eval   (~20 s)

#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "support/cli_run.h"
#include "support/fixtures.h"

namespace compactor {
namespace {

using test::CliResult;

CliResult run_cli(const std::string& args) {
  static const auto dir = test::make_temp_dir("compactor-cli-eval");
  return test::run_cli(args, dir);
}

const std::string kStories = test::model_dir("stories260K").string();

class CliEval : public ::testing::Test {
 protected:
  void SetUp() override { tmp_ = test::make_temp_dir("compactor-cli-eval-test"); }
  void TearDown() override { std::filesystem::remove_all(tmp_); }
  std::string path(const std::string& name) const { return (tmp_ / name).string(); }
  std::string write(const std::string& name, const std::string& text) const {
    std::ofstream(tmp_ / name, std::ios::binary) << text;
    return path(name);
  }
  // A jsonl task whose data file is `rows`.
  std::string task_file(const std::string& rows) const {
    const std::string data = write("d.jsonl", rows);
    return write("mytask.yaml", "task: mytask\nsplit: dev\ndataset: {path: " + data + ", format: jsonl}\n"
                                "context: \"Q: {q}\\nA:\"\nchoices: {field: c}\ngold: {field: g}\n"
                                "metrics: [acc, acc_norm]\n");
  }
  std::filesystem::path tmp_;
};

void expect_estimate(const nlohmann::json& e, const std::string& what) {
  ASSERT_TRUE(e.is_object()) << what;
  EXPECT_TRUE(e["value"].is_number()) << what;
  EXPECT_TRUE(e["stderr"].is_number()) << what;
  ASSERT_TRUE(e["ci95"].is_array()) << what;
  EXPECT_LE(e["ci95"][0].get<double>(), e["value"].get<double>()) << what;
  EXPECT_GE(e["ci95"][1].get<double>(), e["value"].get<double>()) << what;
}

TEST_F(CliEval, MultipleChoiceJsonAndRecord) {
  CliResult r = run_cli("eval " + kStories + " --tasks arc_easy --limit 6 --json --quiet --store " + path("runs.db"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["task"], "arc_easy");
  EXPECT_EQ(j["split"], "test");
  EXPECT_EQ(j["n"], 6);
  EXPECT_EQ(j["shots"], 0);
  expect_estimate(j["acc"], "acc");
  expect_estimate(j["acc_norm"], "acc_norm");
  EXPECT_GT(j["items_per_second"].get<double>(), 0);
  CliResult runs = run_cli("runs --store " + path("runs.db") + " --json");
  ASSERT_EQ(runs.exit_code, 0) << runs.err;
  const std::string dump = runs.out;
  EXPECT_NE(dump.find("arc_easy/acc"), std::string::npos) << dump.substr(0, 2000);
  EXPECT_NE(dump.find("bits_per_parameter"), std::string::npos);
}

TEST_F(CliEval, SeveralTasksMmluGroupsAndShots) {
  CliResult r = run_cli("eval " + kStories + " --tasks boolq,mmlu,truthfulqa_mc2 --limit 2 --json --quiet --no-record");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out)["results"];
  ASSERT_EQ(j.size(), 3u);
  EXPECT_EQ(j[0]["task"], "boolq");
  EXPECT_EQ(j[1]["n"], 114);  // --limit applies per subject
  EXPECT_EQ(j[1]["shots"], 5);
  EXPECT_EQ(j[1]["groups"].size(), 57u);
  EXPECT_TRUE(j[1]["acc_macro"]["value"].is_number());
  EXPECT_GT(j[1]["truncated"].get<int>(), 0);  // 5-shot prompts exceed stories260K's 512 positions
  expect_estimate(j[2]["mc2"], "mc2");
  CliResult too_many = run_cli("eval " + kStories + " --tasks mmlu --shots 6 --limit 1 --quiet --no-record");
  EXPECT_NE(too_many.exit_code, 0);
  EXPECT_NE(too_many.err.find("6 few-shot examples requested but the pool"), std::string::npos) << too_many.err;
  EXPECT_NE(too_many.err.find("abstract_algebra_dev.csv has 5"), std::string::npos) << too_many.err;
}

TEST_F(CliEval, PairedDeltaAgainstBase) {
  CliResult r = run_cli("eval " + kStories + " --base " + kStories +
                        " --tasks arc_challenge --limit 5 --json --quiet --no-record");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["delta"]["acc"]["value"], 0.0);
  EXPECT_EQ(j["base"]["acc"]["value"], j["acc"]["value"]);
}

TEST_F(CliEval, TaskFileIsData) {
  const std::string file = task_file("{\"q\": \"1+1\", \"c\": [\"2\", \"3\"], \"g\": 0}\n"
                                     "{\"q\": \"2+2\", \"c\": [\"4\", \"5\", \"6\"], \"g\": 0}\n");
  CliResult r = run_cli("eval " + kStories + " --task-file " + file + " --json --quiet --no-record");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["task"], "mytask");  // the default ppl task does not run when a task file is given
  EXPECT_EQ(j["n"], 2);
}

TEST_F(CliEval, BadDataNamesFileAndLine) {
  const std::string file = task_file("{\"q\": \"a\", \"c\": [\"x\", \"y\"], \"g\": 0}\n"
                                     "{\"q\": \"b\", \"c\": [\"x\", \"y\"], \"g\": 5}\n");
  CliResult bad = run_cli("eval " + kStories + " --task-file " + file + " --quiet --no-record");
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("d.jsonl:2"), std::string::npos) << bad.err;
  EXPECT_NE(bad.err.find("out of range"), std::string::npos) << bad.err;
  CliResult skipped = run_cli("eval " + kStories + " --task-file " + file + " --skip-bad --json --quiet --no-record");
  ASSERT_EQ(skipped.exit_code, 0) << skipped.err;
  auto j = nlohmann::json::parse(skipped.out);
  EXPECT_EQ(j["n"], 1);
  EXPECT_EQ(j["skipped"], 1);
  EXPECT_NE(j["skipped_rows"][0].get<std::string>().find("d.jsonl:2"), std::string::npos);
  const std::string broken = write("broken.yaml", "task: x\ndataset: {path: d.jsonl, format: jsonl}\n");
  CliResult yaml = run_cli("eval " + kStories + " --task-file " + broken + " --quiet --no-record");
  EXPECT_EQ(yaml.exit_code, 1);
  EXPECT_NE(yaml.err.find("broken.yaml"), std::string::npos) << yaml.err;
  CliResult unknown = run_cli("eval " + kStories + " --tasks arc_medium --quiet --no-record");
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_NE(unknown.err.find("arc_medium"), std::string::npos);
  EXPECT_NE(unknown.err.find("arc_easy"), std::string::npos) << "the error lists the known tasks: " << unknown.err;
}

TEST_F(CliEval, KlDivergenceWithSavedBase) {
  const std::string common = " --tasks kld:tiny --ctx 64 --limit-windows 3 --json --quiet --no-record";
  CliResult self = run_cli("eval " + kStories + " --base " + kStories + common);
  ASSERT_EQ(self.exit_code, 0) << self.err;
  auto j = nlohmann::json::parse(self.out);
  EXPECT_EQ(j["task"], "kld");
  EXPECT_LT(j["mean_kld"]["value"].get<double>(), 1e-9);
  EXPECT_EQ(j["top1_agreement"]["value"], 1.0);
  EXPECT_EQ(j["kld_method"], "exact");
  EXPECT_TRUE(j["kld_p99"].is_number());
  EXPECT_TRUE(j["mean_delta_p"]["value"].is_number());
  CliResult save = run_cli("eval " + kStories + common + " --save-logits " + path("base.st") + " --logits-topk 16");
  ASSERT_EQ(save.exit_code, 0) << save.err;
  EXPECT_TRUE(std::filesystem::exists(path("base.st")));
  CliResult reuse = run_cli("eval " + kStories + " --base " + path("base.st") + common);
  ASSERT_EQ(reuse.exit_code, 0) << reuse.err;
  auto k = nlohmann::json::parse(reuse.out);
  EXPECT_EQ(k["kld_method"], "top16+tail");
  EXPECT_LT(k["mean_kld"]["value"].get<double>(), 1e-6);
  EXPECT_EQ(k["n"], j["n"]);
  CliResult other_ctx = run_cli("eval " + kStories + " --base " + path("base.st") +
                                " --tasks kld:tiny --ctx 32 --limit-windows 3 --quiet --no-record");
  EXPECT_EQ(other_ctx.exit_code, 1);
  EXPECT_NE(other_ctx.err.find("ctx"), std::string::npos) << other_ctx.err;
  CliResult mc_on_file = run_cli("eval " + kStories + " --base " + path("base.st") + " --tasks boolq --quiet --no-record");
  EXPECT_EQ(mc_on_file.exit_code, 1);
  EXPECT_NE(mc_on_file.err.find("saved-logits file"), std::string::npos) << mc_on_file.err;
  CliResult no_base = run_cli("eval " + kStories + " --tasks kld:tiny --quiet --no-record");
  EXPECT_EQ(no_base.exit_code, 1);
  EXPECT_NE(no_base.err.find("--base"), std::string::npos);
}

TEST_F(CliEval, PplKeysUnchanged) {
  CliResult r = run_cli("eval " + kStories + " --tasks ppl --data tiny --ctx 64 --limit-windows 2 --json --quiet --no-record");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_TRUE(j["ppl"].is_number());
  EXPECT_EQ(j["tokens"], 126);
  EXPECT_EQ(j["windows"], 2);
}

}  // namespace
}  // namespace compactor
