// The wgmma GEMM's launch plan (backend/cuda/qgemm_plan.h): tokens per block and split K, chosen
// by its cost model from the blocks a GPU runs at once. Host-only, so it runs without a GPU.
#include <gtest/gtest.h>

#include "backend/cuda/qgemm_plan.h"

namespace compactor {
namespace {

// An H100-like GPU: 132 SMs; clusters of 2 use them all, of 3 and 4 leave some idle.
struct Gpu {
  int at_once[2][kGemmMaxSplits + 1] = {{0, 132, 132, 126, 128}, {0, 132, 132, 126, 128}};
};

constexpr int64_t kRowBlocks4096 = 32;    // 4096 output rows in blocks of 128
constexpr int64_t kRowBlocks11008 = 86;   // 11008 rows
constexpr int kChunks4096 = 64;           // K 4096 in 64-position chunks
constexpr int kChunks11008 = 172;

TEST(GemmPlan, LargeBatchesFillTheGpuWithoutSplitting) {
  const Gpu gpu;
  for (int64_t blocks : {kRowBlocks4096, kRowBlocks11008}) {
    const GemmPlan p = plan_gemm(4096, blocks, kChunks4096, gpu.at_once);
    EXPECT_EQ(p.splits, 1) << blocks << " row blocks";
    EXPECT_EQ(p.tokens, 256) << blocks << " row blocks";
  }
}

TEST(GemmPlan, FewTilesSplitK) {
  const Gpu gpu;
  // down (4096 × 11008) at 512 tokens: 64 tiles of 256 tokens for 132 SMs.
  const GemmPlan down = plan_gemm(512, kRowBlocks4096, kChunks11008, gpu.at_once);
  EXPECT_GT(down.splits, 1);
  // 128 tokens: 32 tiles; the split fills the GPU at least twice over that.
  const GemmPlan small = plan_gemm(128, kRowBlocks4096, kChunks11008, gpu.at_once);
  EXPECT_GE(small.splits * 32, 64);
  EXPECT_EQ(small.tokens, 128);
}

TEST(GemmPlan, SharesKeepEnoughChunks) {
  const Gpu gpu;
  const GemmCosts costs;
  for (int chunks : {1, 2, 5, 7, 8, 12, 16, 64})
    for (int64_t m : {33, 128, 512}) {
      const GemmPlan p = plan_gemm(m, 1, chunks, gpu.at_once);
      EXPECT_TRUE(p.splits == 1 || chunks >= p.splits * costs.min_chunks_per_split)
          << chunks << " chunks, M " << m << ": " << p.splits << " splits";
    }
}

TEST(GemmPlan, ClustersThatCannotRunAreNeverChosen) {
  Gpu gpu;
  for (int t = 0; t < 2; ++t)
    for (int s = 2; s <= kGemmMaxSplits; ++s) gpu.at_once[t][s] = 0;
  for (int64_t m : {33, 128, 512, 2048}) EXPECT_EQ(plan_gemm(m, 8, kChunks11008, gpu.at_once).splits, 1) << m;
}

TEST(GemmPlan, ForcedSplitsAreKeptWithinTheChunksAndTheLimit) {
  const Gpu gpu;
  EXPECT_EQ(plan_gemm(4096, kRowBlocks11008, kChunks4096, gpu.at_once, {0, 3}).splits, 3);
  EXPECT_EQ(plan_gemm(33, 1, 2, gpu.at_once, {0, 4}).splits, 2);  // K of 2 chunks: at most 2 shares
  EXPECT_EQ(plan_gemm(33, 1, 64, gpu.at_once, {0, 9}).splits, kGemmMaxSplits);
  EXPECT_EQ(plan_gemm(33, 1, 64, gpu.at_once, {0, 1}).splits, 1);
  const GemmPlan fixed = plan_gemm(4096, kRowBlocks11008, kChunks4096, gpu.at_once, {128, 2});
  EXPECT_EQ(fixed.tokens, 128);
  EXPECT_EQ(fixed.splits, 2);
  Gpu no_clusters;
  no_clusters.at_once[0][2] = 0;
  const GemmPlan fallback = plan_gemm(33, 1, 64, no_clusters.at_once, {128, 2});
  EXPECT_EQ(fallback.tokens, 128);
  EXPECT_EQ(fallback.splits, 1);
}

// The plan is the cheapest under the model: no other (tokens, splits) the model allows costs less.
TEST(GemmPlan, ChoosesTheCheapestAllowedPlan) {
  const Gpu gpu;
  const GemmCosts c;
  for (int64_t m : {1, 40, 128, 300, 512, 1000, 2048, 8192})
    for (int64_t blocks : {1, 8, 32, 86, 96, 172, 250})
      for (int chunks : {2, 16, 64, 172}) {
        const GemmPlan p = plan_gemm(m, blocks, chunks, gpu.at_once);
        const double chosen = gemm_plan_cost(m, blocks, chunks, p, gpu.at_once[p.tokens / 256][p.splits]);
        ASSERT_GE(chosen, 0);
        for (int tokens : {128, 256})
          for (int s = 1; s <= kGemmMaxSplits; ++s) {
            if (s > 1 && chunks < s * c.min_chunks_per_split) continue;
            EXPECT_LE(chosen, gemm_plan_cost(m, blocks, chunks, {tokens, s}, gpu.at_once[tokens / 256][s]))
                << "M " << m << ", " << blocks << " row blocks, " << chunks << " chunks: " << p.tokens << " tokens × "
                << p.splits << " splits against " << tokens << " × " << s;
          }
      }
}

}  // namespace
}  // namespace compactor
