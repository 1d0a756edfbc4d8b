// Multiple-choice metric arithmetic on crafted log-likelihoods: acc (argmax, first of ties),
// acc_norm (divided by the choice's UTF-8 bytes), mc2 (normalized probability of the true answers),
// and the per-task JSON summary (micro/macro over groups, paired deltas against a base).
// Run: build-*/tests/test_mc_metrics
#include <gtest/gtest.h>

#include <cmath>

#include "eval/multiple_choice.h"

namespace compactor {
namespace {

McItem item(std::vector<int64_t> bytes, int gold, std::vector<uint8_t> mask = {}) {
  McItem it;
  it.choice_bytes = std::move(bytes);
  it.continuations.resize(it.choice_bytes.size(), " x");
  it.gold = gold;
  it.gold_mask = std::move(mask);
  return it;
}

TEST(McMetrics, AccAndAccNorm) {
  // Choice 0 has the highest total log-likelihood; per byte, choice 1 wins (-4/8 > -3/2).
  const std::vector<McItem> items = {item({2, 8, 4}, 1), item({5, 5}, 0), item({3, 3, 3}, 2)};
  const std::vector<std::vector<double>> ll = {{-3.0, -4.0, -6.0}, {-1.0, -1.0}, {-2.0, -2.0, -1.0}};
  const McScores s = score_items(items, ll, {McMetric::kAcc, McMetric::kAccNorm});
  EXPECT_EQ(s.acc, (std::vector<double>{0, 1, 1}));       // item 1: a tie goes to the first choice
  EXPECT_EQ(s.acc_norm, (std::vector<double>{1, 1, 1}));
  EXPECT_TRUE(s.mc2.empty());
  EXPECT_EQ(argmax_first({1.0, 3.0, 3.0}), 1);
}

TEST(McMetrics, Mc2IsTheNormalizedTrueMass) {
  const std::vector<double> ll = {std::log(0.2), std::log(0.1), std::log(0.3), std::log(0.05)};
  EXPECT_NEAR(mc2_score(ll, {1, 1, 0, 0}), 0.3 / 0.65, 1e-12);
  // Shifting every log-likelihood by a constant changes nothing; very negative values do not underflow.
  std::vector<double> shifted = ll;
  for (double& v : shifted) v -= 2000;
  EXPECT_NEAR(mc2_score(shifted, {1, 1, 0, 0}), 0.3 / 0.65, 1e-12);
  const McScores s = score_items({item({1, 1, 1, 1}, -1, {1, 1, 0, 0})}, {ll}, {McMetric::kMc2});
  ASSERT_EQ(s.mc2.size(), 1u);
  EXPECT_NEAR(s.mc2[0], 0.3 / 0.65, 1e-12);
}

TEST(McMetrics, SummaryMicroMacroAndDelta) {
  TaskInstance task;
  task.name = "t";
  task.split = "test";
  task.shots = 5;
  task.groups = {{"g1", "a.csv", 3, 0, 3}, {"g2", "b.csv", 1, 3, 1}};
  task.items.resize(4);
  McScores model, base;
  // Not {1, 1, 0, 0}: GCC 12.2 at -O3 -march=native (AVX-512) miscompiles that constant to {1, 1, 1, 1}.
  model.acc = {1, 0, 1, 0};
  base.acc = {1, 0, 0, 0};
  const nlohmann::json j = summarize_task(task, {McMetric::kAcc}, model, &base, {200, 1});
  EXPECT_EQ(j["task"], "t");
  EXPECT_EQ(j["n"], 4);
  EXPECT_EQ(j["shots"], 5);
  EXPECT_DOUBLE_EQ(j["acc"]["value"].get<double>(), 0.5);               // micro: 2/4
  EXPECT_DOUBLE_EQ(j["acc_macro"]["value"].get<double>(), (2.0 / 3 + 0) / 2);
  EXPECT_DOUBLE_EQ(j["groups"]["g1"]["acc"]["value"].get<double>(), 2.0 / 3);
  EXPECT_EQ(j["groups"]["g2"]["n"], 1);
  EXPECT_TRUE(j["groups"]["g2"]["acc"]["stderr"].is_null());            // n = 1: no stderr
  EXPECT_DOUBLE_EQ(j["base"]["acc"]["value"].get<double>(), 0.25);
  EXPECT_DOUBLE_EQ(j["delta"]["acc"]["value"].get<double>(), 0.25);
  ASSERT_TRUE(j["delta"]["acc"]["ci95"].is_array());
  EXPECT_LE(j["delta"]["acc"]["ci95"][0].get<double>(), 0.25);
  EXPECT_GE(j["delta"]["acc"]["ci95"][1].get<double>(), 0.25);
}

}  // namespace
}  // namespace compactor
