// Window planning of the perplexity convention (docs/VERIFY.md): counts, BOS/no-BOS targets,
// strided (sliding-window) scoring without double counting, and bad settings.
#include <gtest/gtest.h>

#include "eval/perplexity.h"

namespace compactor {
namespace {

TEST(PerplexityPlan, BosWindowsDropTheTail) {
  PerplexityOptions o;
  o.ctx = 512;
  auto plan = plan_perplexity(335687, 2048, o);
  ASSERT_TRUE(plan.is_ok());
  EXPECT_EQ(plan->chunk, 511);
  EXPECT_EQ(plan->starts.size(), 656u);  // 335687 / 511 = 656 (tail of 471 dropped)
  EXPECT_EQ(plan->starts[1], 511);
  EXPECT_EQ(plan->score_from[1], 511);   // every chunk token is scored, the first from BOS
}

TEST(PerplexityPlan, NoBosScoresAllButTheFirstToken) {
  PerplexityOptions o;
  o.ctx = 100;
  o.bos = BosMode::kNone;
  auto plan = plan_perplexity(1000, 2048, o);
  ASSERT_TRUE(plan.is_ok());
  EXPECT_EQ(plan->chunk, 100);
  EXPECT_EQ(plan->starts.size(), 10u);
  EXPECT_EQ(plan->score_from[3], 301);
}

TEST(PerplexityPlan, StrideScoresEachTokenOnce) {
  PerplexityOptions o;
  o.ctx = 101;
  o.stride = 25;
  auto plan = plan_perplexity(400, 2048, o);
  ASSERT_TRUE(plan.is_ok());
  int64_t scored = 0;
  for (size_t w = 0; w < plan->starts.size(); ++w) scored += plan->starts[w] + plan->chunk - plan->score_from[w];
  // Windows start at 0,25,...,300; together they score tokens 0..399 exactly once.
  EXPECT_EQ(plan->starts.back(), 300);
  EXPECT_EQ(scored, 400);
}

TEST(PerplexityPlan, LimitWindows) {
  PerplexityOptions o;
  o.ctx = 64;
  o.limit_windows = 3;
  auto plan = plan_perplexity(100000, 2048, o);
  ASSERT_TRUE(plan.is_ok());
  EXPECT_EQ(plan->starts.size(), 3u);
}

TEST(PerplexityPlan, BadSettingsAreErrors) {
  PerplexityOptions o;
  o.ctx = 4096;
  auto too_long = plan_perplexity(100000, 2048, o);
  ASSERT_FALSE(too_long.is_ok());
  EXPECT_NE(too_long.status().message().find("--ctx"), std::string::npos);
  o.ctx = 512;
  auto too_short = plan_perplexity(100, 2048, o);
  ASSERT_FALSE(too_short.is_ok());
  EXPECT_NE(too_short.status().message().find("fewer than one window"), std::string::npos);
  o.stride = 600;
  EXPECT_FALSE(plan_perplexity(100000, 2048, o).is_ok());
}

}  // namespace
}  // namespace compactor
