// Data readers and bad input of multiple-choice tasks: CSV quoting, line numbers in every error,
// malformed rows, missing fields, gold labels out of range, empty tasks, few-shot requests larger
// than the pool, and counted skips with --skip-bad.
// Run: build-*/tests/test_task_data
#include <gtest/gtest.h>

#include <fstream>

#include "eval/task_items.h"
#include "support/fixtures.h"

namespace compactor {
namespace {

class TaskDataTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = test::make_temp_dir("task_data"); }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name, std::ios::binary) << text;
    return (dir_ / name).string();
  }
  // A small jsonl task over `data` with the given extra YAML.
  Result<TaskInstance> build(const std::string& data, const std::string& extra = "", bool skip_bad = false,
                             int shots = -1) {
    write("d.jsonl", data);
    ASSIGN_OR_RETURN(TaskSpec spec, parse_task_spec("task: t\ndataset: {path: d.jsonl, format: jsonl}\n"
                                                    "context: \"Q: {q}\\nA:\"\nchoices: {field: c}\n"
                                                    "gold: {field: g}\nmetrics: [acc, acc_norm]\n" + extra,
                                                    "t.yaml"));
    TaskBuildOptions o;
    o.data_dir = dir_;
    o.skip_bad = skip_bad;
    o.shots = shots;
    return build_task(spec, o);
  }
  std::filesystem::path dir_;
};

TEST(Csv, QuotesEscapesNewlinesAndLines) {
  auto r = parse_csv("a,\"b, c\",\"say \"\"hi\"\"\"\r\n\"multi\nline\",x,y\n\nlast,1,2", "f.csv");
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  ASSERT_EQ(r->size(), 3u);
  EXPECT_EQ((*r)[0].fields, (std::vector<std::string>{"a", "b, c", "say \"hi\""}));
  EXPECT_EQ((*r)[1].fields[0], "multi\nline");
  EXPECT_EQ((*r)[1].line, 2);
  EXPECT_EQ((*r)[2].line, 5);
  auto bad = parse_csv("a,b\n\"open,c\n", "f.csv");
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("f.csv:2: unterminated"), std::string::npos) << bad.status().message();
}

TEST(TaskData, ErrorsNameFileAndLine) {
  CsvOptions csv{{"q", "a", "b"}, false};
  auto cols = parse_task_data("x,y,z\nx,y\n", "m.csv", DataFormat::kCsv, csv, false);
  ASSERT_FALSE(cols.is_ok());
  EXPECT_NE(cols.status().message().find("m.csv:2: expected 3 columns, found 2"), std::string::npos);
  auto json = parse_task_data("{\"a\": 1}\n\n{broken\n", "d.jsonl", DataFormat::kJsonl, {}, false);
  ASSERT_FALSE(json.is_ok());
  EXPECT_NE(json.status().message().find("d.jsonl:3: not valid JSON"), std::string::npos);
  auto arr = parse_task_data("[{\"a\": 1}, 7]", "t.json", DataFormat::kJson, {}, false);
  EXPECT_NE(arr.status().message().find("t.json:item 2"), std::string::npos);
  auto hs = parse_task_data("ctx\n2\na\nb\nc\nd\nctx2\nx\na\nb\nc\nd\n", "h.txt", DataFormat::kHellaswag, {}, false);
  ASSERT_FALSE(hs.is_ok());
  EXPECT_NE(hs.status().message().find("h.txt:8: expected the gold index"), std::string::npos) << hs.status().message();
  auto cut = parse_task_data("ctx\n2\na\nb\n", "h.txt", DataFormat::kHellaswag, {}, false);
  EXPECT_NE(cut.status().message().find("truncated item"), std::string::npos);
  auto skipped = parse_task_data("{\"a\": 1}\n{broken\n[1]\n{\"a\": 2}\n", "d.jsonl", DataFormat::kJsonl, {}, true);
  ASSERT_TRUE(skipped.is_ok());
  EXPECT_EQ(skipped->rows.size(), 2u);
  ASSERT_EQ(skipped->skipped.size(), 2u);
  EXPECT_NE(skipped->skipped[1].find("d.jsonl:3"), std::string::npos);
}

TEST(TaskData, SharedFilesHaveTheirSizes) {
  auto arc = read_task_data(test::shared_dir() / "data/arc/ARC-Easy/ARC-Easy-Test.jsonl", DataFormat::kJsonl, {}, false);
  ASSERT_TRUE(arc.is_ok());
  EXPECT_EQ(arc->rows.size(), 2376u);
  auto hs = read_task_data(test::shared_dir() / "data/hellaswag/hellaswag_val_full.txt", DataFormat::kHellaswag, {}, false);
  ASSERT_TRUE(hs.is_ok());
  EXPECT_EQ(hs->rows.size(), 10042u);
  auto tqa = read_task_data(test::shared_dir() / "data/truthfulqa/data_v1_mc_task.json", DataFormat::kJson, {}, false);
  ASSERT_TRUE(tqa.is_ok());
  EXPECT_EQ(tqa->rows.size(), 817u);
  CsvOptions csv{{"question", "A", "B", "C", "D", "answer"}, false};
  auto mmlu = read_task_data(test::shared_dir() / "data/mmlu/test/virology_test.csv", DataFormat::kCsv, csv, false);
  ASSERT_TRUE(mmlu.is_ok());
  EXPECT_EQ(mmlu->rows.size(), 166u);
}

TEST_F(TaskDataTest, GoodRowsBuild) {
  auto t = build("{\"q\": \"1+1\", \"c\": [\"2\", \"3\"], \"g\": 0}\n{\"q\": \"2+2\", \"c\": [\"5\", \"4\"], \"g\": \"1\"}\n");
  ASSERT_TRUE(t.is_ok()) << t.status().message();
  ASSERT_EQ(t->items.size(), 2u);
  EXPECT_EQ(t->items[1].context, "Q: 2+2\nA:");
  EXPECT_EQ(t->items[1].gold, 1);
}

TEST_F(TaskDataTest, BadRowsAreErrorsWithFileAndLine) {
  const std::string good = "{\"q\": \"a\", \"c\": [\"x\", \"y\"], \"g\": 0}\n";
  struct Case {
    std::string row, expect;
  } cases[] = {
      {"{\"q\": \"a\", \"c\": [\"x\", \"y\"], \"g\": 2}", "gold index 2 (field 'g') is out of range for 2 choices"},
      {"{\"q\": \"a\", \"c\": [\"x\", \"y\"], \"g\": -1}", "out of range"},
      {"{\"q\": \"a\", \"c\": [\"x\", \"y\"], \"g\": \"first\"}", "expected an integer index"},
      {"{\"c\": [\"x\", \"y\"], \"g\": 0}", "missing field 'q'"},
      {"{\"q\": \"a\", \"g\": 0}", "missing field 'c'"},
      {"{\"q\": \"a\", \"c\": \"xy\", \"g\": 0}", "expected a list"},
      {"{\"q\": \"a\", \"c\": [\"x\"], \"g\": 0}", "at least 2 needed"},
      {"{\"q\": \"a\", \"c\": [\"x\", \"\"], \"g\": 0}", "choice 1 is empty"},
      {"{\"q\": \"a\", \"c\": [\"x\", \"y\"], \"g\": 0", "not valid JSON"},
  };
  for (const Case& c : cases) {
    auto t = build(good + c.row + "\n");
    ASSERT_FALSE(t.is_ok()) << c.row;
    EXPECT_NE(t.status().message().find("d.jsonl:2"), std::string::npos) << t.status().message();
    EXPECT_NE(t.status().message().find(c.expect), std::string::npos) << t.status().message();
    auto skipped = build(good + c.row + "\n", "", true);
    ASSERT_TRUE(skipped.is_ok()) << c.row << ": " << skipped.status().message();
    EXPECT_EQ(skipped->items.size(), 1u);
    ASSERT_EQ(skipped->skipped.size(), 1u);
    EXPECT_NE(skipped->skipped[0].find("d.jsonl:2"), std::string::npos);
  }
}

TEST_F(TaskDataTest, LabelGoldsAndMasks) {
  const std::string extra_labels = "gold: {field: g, labels: [A, B]}\n";
  auto t = parse_task_spec("task: t\ndataset: {path: d.jsonl, format: jsonl}\ncontext: q\nchoices: {field: c}\n" +
                               extra_labels + "metrics: [acc]\n", "t.yaml");
  ASSERT_TRUE(t.is_ok()) << t.status().message();
  auto ok = render_row(*t, Doc::parse(R"({"c": ["x", "y"], "g": "B"})"));
  ASSERT_TRUE(ok.is_ok());
  EXPECT_EQ(ok->gold, 1);
  auto bad = render_row(*t, Doc::parse(R"({"c": ["x", "y"], "g": "E"})"));
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("gold 'E' (field 'g') is not one of the labels [A, B]"), std::string::npos);
  auto mask = parse_task_spec("task: t\ndataset: {path: d.json, format: json}\ncontext: q\nchoices: {field: m.@keys}\n"
                              "gold: {mask_field: m.@values}\nmetrics: [mc2]\n", "t.yaml");
  ASSERT_TRUE(mask.is_ok());
  auto m = render_row(*mask, Doc::parse(R"({"m": {"t1": 1, "t2": 1, "f": 0}})"));
  ASSERT_TRUE(m.is_ok());
  EXPECT_EQ(m->gold_mask, (std::vector<uint8_t>{1, 1, 0}));
  EXPECT_EQ(m->gold, -1);  // two true answers: no single gold
  EXPECT_FALSE(render_row(*mask, Doc::parse(R"({"m": {"t1": 0, "f": 0}})")).is_ok());
  EXPECT_FALSE(render_row(*mask, Doc::parse(R"({"m": {"t1": 2, "f": 0}})")).is_ok());
}

TEST_F(TaskDataTest, EmptyTaskAndMissingFileAreErrors) {
  auto empty = build("\n\n");
  ASSERT_FALSE(empty.is_ok());
  EXPECT_NE(empty.status().message().find("has no rows"), std::string::npos) << empty.status().message();
  auto all_bad = build("{broken\n", "", true);
  ASSERT_FALSE(all_bad.is_ok());
  EXPECT_NE(all_bad.status().message().find("no valid rows"), std::string::npos) << all_bad.status().message();
  auto spec = parse_task_spec("task: t\ndataset: {path: nope.jsonl, format: jsonl}\ncontext: q\n"
                              "choices: {field: c}\ngold: {field: g}\nmetrics: [acc]\n", "t.yaml");
  TaskBuildOptions o;
  o.data_dir = dir_;
  auto missing = build_task(*spec, o);
  ASSERT_FALSE(missing.is_ok());
  EXPECT_NE(missing.status().message().find("nope.jsonl"), std::string::npos);
}

TEST_F(TaskDataTest, FewShotPoolSizeAndSelfExclusion) {
  std::string rows;
  for (int i = 0; i < 3; ++i) rows += fmt::format("{{\"q\": \"q{}\", \"c\": [\"a{}\", \"b{}\"], \"g\": 1}}\n", i, i, i);
  const std::string pool = "fewshot: {path: d.jsonl, count: 1, sampler: first}\n";
  auto t = build(rows, pool);
  ASSERT_TRUE(t.is_ok()) << t.status().message();
  EXPECT_EQ(t->items[0].context, "Q: q1\nA: b1\n\nQ: q0\nA:");  // never its own row
  EXPECT_EQ(t->items[1].context, "Q: q0\nA: b0\n\nQ: q1\nA:");
  auto two = build(rows, pool, false, 2);
  ASSERT_TRUE(two.is_ok());
  EXPECT_EQ(two->items[2].context, "Q: q0\nA: b0\n\nQ: q1\nA: b1\n\nQ: q2\nA:");
  auto too_many = build(rows, pool, false, 3);
  ASSERT_FALSE(too_many.is_ok());
  EXPECT_NE(too_many.status().message().find("3 few-shot examples requested but the pool"), std::string::npos)
      << too_many.status().message();
  EXPECT_NE(too_many.status().message().find("has 2"), std::string::npos);
  auto no_pool = build(rows, "", false, 1);
  ASSERT_FALSE(no_pool.is_ok());
  EXPECT_NE(no_pool.status().message().find("defines no few-shot pool"), std::string::npos);
}

TEST_F(TaskDataTest, LimitAndSeededSubsets) {
  std::string rows;
  for (int i = 0; i < 20; ++i) rows += fmt::format("{{\"q\": \"q{}\", \"c\": [\"a\", \"b\"], \"g\": 0}}\n", i);
  write("d.jsonl", rows);
  auto spec = parse_task_spec("task: t\ndataset: {path: d.jsonl, format: jsonl}\ncontext: \"{q}\"\n"
                              "choices: {field: c}\ngold: {field: g}\nmetrics: [acc]\n", "t.yaml");
  TaskBuildOptions o;
  o.data_dir = dir_;
  o.limit = 5;
  auto first = build_task(*spec, o);
  ASSERT_TRUE(first.is_ok());
  EXPECT_EQ(first->items[4].context, "q4");
  o.subset_seed = 7;
  auto a = build_task(*spec, o), b = build_task(*spec, o);
  o.subset_seed = 8;
  auto c = build_task(*spec, o);
  ASSERT_EQ(a->items.size(), 5u);
  std::vector<std::string> ca, cb, cc;
  for (size_t i = 0; i < 5; ++i) {
    ca.push_back(a->items[i].context);
    cb.push_back(b->items[i].context);
    cc.push_back(c->items[i].context);
  }
  EXPECT_EQ(ca, cb);
  EXPECT_NE(ca, cc);
  EXPECT_EQ(a->groups[0].rows, 20);
}

}  // namespace
}  // namespace compactor
