// The compactor binary end to end: the interface scripts rely on (issue "Foundation"), run
// records in the store, recipes, and bad input (clear message, non-zero exit, no crash).

#include <fstream>
#include <functional>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "support/cli_run.h"
#include "support/fixtures.h"

namespace compactor {
namespace {

using CliRun = test::CliResult;

CliRun run(const std::string& args) {
  static const auto dir = test::make_temp_dir("compactor-cli");
  return test::run_cli(args, dir);
}

std::string model(const std::string& name) { return test::model_dir(name).string(); }

class Cli : public ::testing::Test {
 protected:
  void SetUp() override { tmp_ = test::make_temp_dir("compactor-cli-test"); }
  void TearDown() override { std::filesystem::remove_all(tmp_); }
  std::string store() const { return (tmp_ / "runs.db").string(); }
  std::filesystem::path tmp_;
};

TEST_F(Cli, InfoJson) {
  CliRun r = run("info " + model("fixture-llama-sp") + " --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["architecture"], "LlamaForCausalLM");
  EXPECT_EQ(j["parameters"], 24877440);
  EXPECT_EQ(j["kv_heads"], 2);
}

TEST_F(Cli, TokenizeJson) {
  CliRun r = run("tokenize " + model("fixture-llama-sp") + " --text 'Hello world' --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["ids"], (std::vector<int>{15043, 3186}));
  EXPECT_TRUE(j["round_trip"].get<bool>());
  CliRun with_bos = run("tokenize " + model("fixture-llama-sp") + " --text 'Hello world' --json --bos");
  EXPECT_EQ(nlohmann::json::parse(with_bos.out)["ids"][0], 1);
}

TEST_F(Cli, EvalPplJsonAndRunRecord) {
  CliRun r = run("eval " + model("stories260K") + " --tasks ppl --data " +
              (test::shared_dir() / "data/calibration/tiny.utf8").string() + " --ctx 128 --limit-windows 4 --json --quiet" +
              " --store " + store() + " --record-dir " + tmp_.string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["windows"], 4);
  EXPECT_EQ(j["tokens"], 4 * 127);
  EXPECT_GT(j["ppl"].get<double>(), 1.0);
  EXPECT_LT(j["ppl"].get<double>(), 100.0);  // in-domain text for a TinyStories model
  CliRun runs = run("runs --store " + store() + " --json");
  ASSERT_EQ(runs.exit_code, 0) << runs.err;
  auto records = nlohmann::json::parse(runs.out);
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0]["command"], "eval");
  EXPECT_EQ(records[0]["model_hash"].get<std::string>().size(), 64u);
  int json_files = 0;
  for (const auto& e : std::filesystem::directory_iterator(tmp_))
    if (e.path().extension() == ".json") ++json_files;
  EXPECT_EQ(json_files, 1);
}

TEST_F(Cli, RecipeFillsFlagsAndFlagsOverride) {
  std::ofstream(tmp_ / "r.yaml") << "ctx: 64\nlimit-windows: 2\ntasks: ppl\ndata: tiny\n";
  CliRun r = run("eval " + model("stories260K") + " --recipe " + (tmp_ / "r.yaml").string() + " --json --quiet --no-record");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["ctx"], 64);
  EXPECT_EQ(j["windows"], 2);
  CliRun o = run("eval " + model("stories260K") + " --recipe " + (tmp_ / "r.yaml").string() +
              " --limit-windows 3 --json --quiet --no-record");
  ASSERT_EQ(o.exit_code, 0) << o.err;
  EXPECT_EQ(nlohmann::json::parse(o.out)["windows"], 3);
}

TEST_F(Cli, GenerateIsDeterministicWithASeed) {
  const std::string args = "generate " + model("stories260K") +
                           " --prompt 'Once upon a time' --max-tokens 24 --temperature 0.8 --seed 5 --json --quiet";
  CliRun a = run(args), b = run(args);
  ASSERT_EQ(a.exit_code, 0) << a.err;
  EXPECT_EQ(nlohmann::json::parse(a.out)["ids"], nlohmann::json::parse(b.out)["ids"]);
}

TEST_F(Cli, BadInputGivesAClearErrorAndNonZeroExit) {
  struct Case {
    std::string args, expect;
  };
  std::filesystem::create_directories(tmp_ / "broken");
  std::filesystem::copy(test::model_dir("stories260K") / "config.json", tmp_ / "broken");
  std::filesystem::copy(test::model_dir("stories260K") / "tokenizer.model", tmp_ / "broken");
  {
    std::ifstream in(test::model_dir("stories260K") / "model.safetensors", std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), {});
    std::ofstream(tmp_ / "broken" / "model.safetensors", std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  }
  std::ofstream(tmp_ / "empty.txt").close();
  // Copies stories260K with an edited config.json (weights linked, not copied).
  auto variant = [&](const std::string& name, const std::function<void(nlohmann::json&)>& edit) {
    const auto dir = tmp_ / name;
    std::filesystem::create_directories(dir);
    for (const char* f : {"model.safetensors", "tokenizer.model", "tokenizer_config.json"})
      std::filesystem::create_symlink(test::model_dir("stories260K") / f, dir / f);
    std::ifstream in(test::model_dir("stories260K") / "config.json");
    nlohmann::json cfg = nlohmann::json::parse(in);
    edit(cfg);
    std::ofstream(dir / "config.json") << cfg.dump();
    return dir.string();
  };
  const std::string wrong_shape = variant("wrong-shape", [](auto& c) { c["intermediate_size"] = 200; });
  const std::string unknown_arch = variant("unknown-arch", [](auto& c) { c["architectures"] = {"GPT2LMHeadModel"}; });
  const Case cases[] = {
      {"info /nonexistent/model", "/nonexistent/model"},
      {"info " + (tmp_ / "broken").string(), "model.safetensors"},
      {"eval " + model("stories260K") + " --ctx 4096 --no-record --quiet", "--ctx"},
      {"eval " + model("stories260K") + " --data " + (tmp_ / "empty.txt").string() + " --no-record --quiet", "empty"},
      {"eval " + model("stories260K") + " --data /no/such/file --no-record --quiet", "/no/such/file"},
      {"eval " + model("stories260K") + " --tasks nonsense --no-record --quiet", "nonsense"},
      {"eval " + model("stories260K") + " --device tpu --no-record", "tpu"},
      {"generate " + model("stories260K") + " --prompt hi --top-p 0", "--top-p"},
      {"info " + wrong_shape, "gate_proj.weight"},
      {"info " + unknown_arch, "GPT2LMHeadModel"},
  };
  for (const Case& c : cases) {
    CliRun r = run(c.args);
    EXPECT_NE(r.exit_code, 0) << c.args;
    EXPECT_LT(r.exit_code, 128) << "crashed: " << c.args;
    EXPECT_NE(r.err.find(c.expect), std::string::npos) << c.args << "\nstderr: " << r.err;
  }
}

}  // namespace
}  // namespace compactor
