// YAML recipes for CLI11: recipe values fill options, flags override them, keys scope to the selected
// subcommand, and bad recipes give errors naming the key/line/file. Run: ./build/tests/test_recipe
#include <fstream>

#include <gtest/gtest.h>

#include "exp/recipe.h"
#include "support/fixtures.h"

namespace compactor {
namespace {

namespace fs = std::filesystem;

// A small stand-in for the compactor CLI: a global option and two subcommands sharing a flag name.
struct Cli {
  CLI::App app{"recipe test"};
  int threads = 1;
  CLI::App* eval = nullptr;
  std::string model;
  int ctx = 2048;
  std::vector<std::string> tasks;
  bool no_bos = false;
  double temperature = 1.0;
  CLI::App* bench = nullptr;
  std::vector<int> batch;
  int bench_ctx = 4096;

  Cli() {
    app.add_option("--threads", threads, "worker threads");
    eval = app.add_subcommand("eval", "measure quality");
    eval->add_option("model", model, "model directory")->required();
    eval->add_option("--ctx", ctx, "context length");
    eval->add_option("--tasks", tasks, "tasks")->delimiter(',');
    eval->add_flag("--no-bos", no_bos, "do not prepend BOS");
    eval->add_option("--temperature", temperature);
    bench = app.add_subcommand("bench", "measure speed");
    bench->add_option("--batch", batch)->delimiter(',');
    bench->add_option("--ctx", bench_ctx);
    app.require_subcommand(1);
    install_recipe_option(app);  // after the subcommands, as tools/compactor may do
  }

  // Returns the parse error's message, or "" when parsing succeeded.
  std::string parse(std::vector<std::string> args) {
    args.insert(args.begin(), "compactor");
    std::vector<const char*> argv;
    for (const std::string& a : args) argv.push_back(a.c_str());
    try {
      app.parse(static_cast<int>(argv.size()), argv.data());
    } catch (const CLI::ParseError& e) {
      return e.what();
    }
    return "";
  }
};

class RecipeTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = test::make_temp_dir("recipe"); }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string write(const std::string& name, const std::string& text) {
    fs::path p = dir_ / name;
    std::ofstream(p) << text;
    return p.string();
  }
  fs::path dir_;
};

TEST_F(RecipeTest, RecipeFillsOptionsNotOnTheCommandLine) {
  std::string r = write("r.yaml", "ctx: 512\ntasks: [ppl, arc_easy]\nno-bos: true\nthreads: 4\ntemperature: 0.5\n");
  Cli cli;
  ASSERT_EQ(cli.parse({"eval", "/m", "--recipe", r}), "");
  EXPECT_EQ(cli.model, "/m");
  EXPECT_EQ(cli.ctx, 512);
  EXPECT_EQ(cli.tasks, (std::vector<std::string>{"ppl", "arc_easy"}));
  EXPECT_TRUE(cli.no_bos);
  EXPECT_EQ(cli.threads, 4);  // not an eval option: falls back to the root's
  EXPECT_DOUBLE_EQ(cli.temperature, 0.5);
  EXPECT_EQ(cli.bench_ctx, 4096);  // `ctx` went to the selected subcommand only
}

TEST_F(RecipeTest, CommandLineFlagsOverrideTheRecipe) {
  std::string r = write("r.yaml", "ctx: 512\ntasks: ppl,arc_easy\nthreads: 4\nno-bos: false\n");
  Cli cli;
  ASSERT_EQ(cli.parse({"--threads", "8", "eval", "/m", "--ctx", "128", "--no-bos", "--recipe", r}), "");
  EXPECT_EQ(cli.ctx, 128);
  EXPECT_EQ(cli.threads, 8);
  EXPECT_TRUE(cli.no_bos);
  EXPECT_EQ(cli.tasks, (std::vector<std::string>{"ppl", "arc_easy"}));  // delimiter applies to recipe text too
}

TEST_F(RecipeTest, RecipeBeforeTheSubcommandAndPositionalFromRecipe) {
  std::string r = write("r.yaml", "model: /from/recipe\nctx: 256\n");
  Cli cli;
  ASSERT_EQ(cli.parse({"--recipe", r, "eval"}), "");
  EXPECT_EQ(cli.model, "/from/recipe");
  EXPECT_EQ(cli.ctx, 256);
}

TEST_F(RecipeTest, TopLevelKeysGoToTheSelectedSubcommand) {
  std::string r = write("r.yaml", "ctx: 64\nbatch: [1, 8, 32]\n");
  Cli cli;
  ASSERT_EQ(cli.parse({"bench", "--recipe", r}), "");
  EXPECT_EQ(cli.bench_ctx, 64);
  EXPECT_EQ(cli.ctx, 2048);
  EXPECT_EQ(cli.batch, (std::vector<int>{1, 8, 32}));

  Cli other;  // the same key is not an option of eval's sibling path: `batch` is unknown to eval
  std::string err = other.parse({"eval", "/m", "--recipe", r});
  EXPECT_NE(err.find("'batch'"), std::string::npos) << err;
}

TEST_F(RecipeTest, SubcommandSectionsApplyToTheirSubcommand) {
  std::string r = write("r.yaml", "threads: 3\neval:\n  ctx: 512\n  tasks: [ppl]\nbench:\n  ctx: 64\n");
  Cli cli;
  ASSERT_EQ(cli.parse({"eval", "/m", "--recipe", r}), "");
  EXPECT_EQ(cli.ctx, 512);
  EXPECT_EQ(cli.tasks, std::vector<std::string>{"ppl"});
  EXPECT_EQ(cli.threads, 3);
  EXPECT_FALSE(cli.app.got_subcommand("bench"));  // a section never selects a subcommand
}

TEST_F(RecipeTest, UnknownKeyNamesKeyLineAndFile) {
  std::string r = write("typo.yaml", "ctx: 512\ncontext_len: 3\n");
  Cli cli;
  std::string err = cli.parse({"eval", "/m", "--recipe", r});
  EXPECT_NE(err.find("'context_len'"), std::string::npos) << err;
  EXPECT_NE(err.find(r), std::string::npos) << err;
  EXPECT_NE(err.find("line 2"), std::string::npos) << err;

  std::string s = write("section.yaml", "eval:\n  ctx: 1\n  nope: 2\n");
  Cli cli2;
  err = cli2.parse({"eval", "/m", "--recipe", s});
  EXPECT_NE(err.find("'nope'"), std::string::npos) << err;
  EXPECT_NE(err.find("line 3"), std::string::npos) << err;

  std::string m = write("map.yaml", "ctx:\n  a: 1\n");  // a mapping where an option is expected
  Cli cli3;
  err = cli3.parse({"eval", "/m", "--recipe", m});
  EXPECT_NE(err.find("'ctx'"), std::string::npos) << err;
}

TEST_F(RecipeTest, MalformedYamlNamesFileAndLine) {
  std::string r = write("bad.yaml", "ctx: 512\ntasks: [ppl, arc\nthreads: 2\n");
  Cli cli;
  std::string err = cli.parse({"eval", "/m", "--recipe", r});
  EXPECT_NE(err.find(r), std::string::npos) << err;
  EXPECT_NE(err.find("malformed YAML at line "), std::string::npos) << err;

  std::string t = write("tabs.yaml", "ctx: 512\n\tthreads: 2\n");  // YAML forbids tab indentation
  Cli cli2;
  err = cli2.parse({"eval", "/m", "--recipe", t});
  EXPECT_NE(err.find("at line 2"), std::string::npos) << err;

  std::string l = write("list.yaml", "- ctx\n- 512\n");
  Cli cli3;
  err = cli3.parse({"eval", "/m", "--recipe", l});
  EXPECT_NE(err.find("mapping"), std::string::npos) << err;
  EXPECT_NE(err.find(l), std::string::npos) << err;
}

TEST_F(RecipeTest, MissingRecipeFileIsNamed) {
  Cli cli;
  const std::string absent = (dir_ / "absent.yaml").string();
  std::string err = cli.parse({"eval", "/m", "--recipe", absent});
  EXPECT_NE(err.find(absent), std::string::npos) << err;
}

TEST_F(RecipeTest, BadValuesAreRejected) {
  Cli cli;
  std::string r = write("null.yaml", "threads: 2\nctx:\n");
  std::string err = cli.parse({"eval", "/m", "--recipe", r});
  EXPECT_NE(err.find("line 2: key 'ctx' has no value"), std::string::npos) << err;

  Cli cli2;
  std::string n = write("nested.yaml", "tasks: [[ppl]]\n");
  err = cli2.parse({"eval", "/m", "--recipe", n});
  EXPECT_NE(err.find("'tasks'"), std::string::npos) << err;

  Cli cli3;  // CLI11's own conversion check still runs on recipe values
  std::string c = write("conv.yaml", "ctx: lots\n");
  err = cli3.parse({"eval", "/m", "--recipe", c});
  EXPECT_NE(err.find("lots"), std::string::npos) << err;

  Cli cli4;
  std::string self = write("self.yaml", "recipe: other.yaml\n");
  err = cli4.parse({"eval", "/m", "--recipe", self});
  EXPECT_NE(err.find("--recipe cannot be set from a recipe"), std::string::npos) << err;
}

TEST_F(RecipeTest, InstallingFromASubcommandInstallsOnTheRoot) {
  CLI::App app{"per-subcommand install"};
  int ctx = 0, batch = 0;
  CLI::App* eval = app.add_subcommand("eval");
  eval->add_option("--ctx", ctx);
  install_recipe_option(*eval);  // how a CLI that adds common options per subcommand calls it
  CLI::App* bench = app.add_subcommand("bench");
  bench->add_option("--batch", batch);
  install_recipe_option(*bench);
  ASSERT_NE(app.get_config_ptr(), nullptr);
  EXPECT_EQ(eval->get_config_ptr(), nullptr);

  std::string r = write("r.yaml", "ctx: 99\n");
  std::vector<const char*> argv{"compactor", "eval", "--recipe", r.c_str()};
  ASSERT_NO_THROW(app.parse(static_cast<int>(argv.size()), argv.data()));
  EXPECT_EQ(ctx, 99);
}

TEST_F(RecipeTest, EmptyRecipeChangesNothing) {
  std::string r = write("empty.yaml", "# nothing yet\n");
  Cli cli;
  ASSERT_EQ(cli.parse({"eval", "/m", "--recipe", r}), "");
  EXPECT_EQ(cli.ctx, 2048);
  EXPECT_TRUE(cli.tasks.empty());
}

TEST_F(RecipeTest, QuotedBooleanWordsStayStrings) {
  std::string r = write("q.yaml", "tasks: ['True', yes]\n");
  Cli cli;
  ASSERT_EQ(cli.parse({"eval", "/m", "--recipe", r}), "");
  EXPECT_EQ(cli.tasks, (std::vector<std::string>{"True", "yes"}));
}

TEST_F(RecipeTest, ToConfigWritesARecipeThatReadsBack) {
  Cli cli;
  ASSERT_EQ(cli.parse({"--threads", "6", "eval", "/m", "--ctx", "300", "--tasks", "ppl,boolq", "--no-bos"}), "");
  const std::string yaml = cli.app.config_to_str(false, false);
  EXPECT_NE(yaml.find("eval:"), std::string::npos) << yaml;
  std::string r = write("dump.yaml", yaml);

  Cli back;
  ASSERT_EQ(back.parse({"--recipe", r, "eval"}), "") << yaml;
  EXPECT_EQ(back.threads, 6);
  EXPECT_EQ(back.model, "/m");
  EXPECT_EQ(back.ctx, 300);
  EXPECT_EQ(back.tasks, (std::vector<std::string>{"ppl", "boolq"}));
  EXPECT_TRUE(back.no_bos);
}

TEST_F(RecipeTest, OptionsToJsonRecordsTheMergedOptions) {
  std::string r = write("r.yaml", "tasks: [ppl, arc_easy]\ntemperature: 0.25\n");
  Cli cli;
  ASSERT_EQ(cli.parse({"eval", "/m", "--ctx", "128", "--recipe", r}), "");
  nlohmann::json j = options_to_json(*cli.eval);
  EXPECT_EQ(j["model"], "/m");
  EXPECT_EQ(j["ctx"], 128);
  EXPECT_EQ(j["tasks"], (nlohmann::json{"ppl", "arc_easy"}));
  EXPECT_EQ(j["temperature"], 0.25);
  EXPECT_EQ(j["no-bos"], false);
  EXPECT_FALSE(j.contains("help"));

  nlohmann::json root = options_to_json(cli.app);
  EXPECT_EQ(root["recipe"], r);
  EXPECT_EQ(root["eval"]["ctx"], 128);
  EXPECT_FALSE(root.contains("bench"));
}

}  // namespace
}  // namespace compactor
