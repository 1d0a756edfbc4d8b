// How the wgmma GEMM (qgemm_wgmma.cu) cuts a launch into blocks: tokens per block (the wgmma N,
// 256 or 128) and how many blocks share one output tile's K (split K: a thread block cluster whose
// blocks each multiply a share of the 64-position chunks and sum their partial tiles through
// distributed shared memory). Host-only, so the choice is testable without a GPU
// (tests/unit/test_qgemm_plan.cpp).
//
// Every block takes one SM (its ring fills the shared memory), so a launch runs in waves. The
// cost model, in units of one 256-token chunk's time:
//   waves × (block_start + chunks per block × chunk time + (split ? exchange : 0))
// waves = ceil(tiles × splits / capacity), where capacity is the blocks that run at once: the SMs,
// or for clusters the whole clusters a GPC's SMs hold (queried from the driver). The constants
// are fitted to H100 measurements (bench/results/NVIDIA-H100-80GB-HBM3-ncu-notes.md, "Ninth
// session"): a 128-token chunk takes 0.7 of a 256-token one (the conversion of the weights is the
// same, only the multiply halves); each split block pays an extra cost that grows with the blocks
// per tile. It is named the exchange (the barriers and reads of the other blocks' partial tiles),
// but the measurements put most of it in the fixed start and store of a block, which a short
// split block cannot amortise (notes: "What the split blocks pay"). Fitted, not derived.
#pragma once

#include <cstdint>

namespace compactor {

// Blocks one tile's K may be split over (a cluster; 8 is the portable cluster limit).
inline constexpr int kGemmMaxSplits = 4;

struct GemmPlan {
  int tokens = 256;  // input rows per block (the wgmma N): 256 or 128
  int splits = 1;    // blocks per output tile, each multiplying chunks / splits of K
};

// What a caller fixes of the plan (0: the cost model chooses), for measurements and tests.
struct GemmPlanLimits {
  int tokens = 0;  // 128 or 256
  int splits = 0;  // 1..kGemmMaxSplits (fewer where K has fewer chunks)
};

struct GemmCosts {
  double chunk128 = 0.7;         // a 128-token chunk, in 256-token chunks
  double block_start = 1.0;      // a block's start, first copies and store
  double exchange_base = 2.4;       // a split block's extra cost (see the file comment):
  double exchange_per_split = 1.2;  //   base + per_split × splits at 128 tokens,
  double exchange256 = 1.5;         //   times this at 256 tokens
  int min_chunks_per_split = 4;  // shorter shares are all start and exchange
};

// The model's time of a plan (see the file comment), or < 0 where it cannot run.
inline double gemm_plan_cost(int64_t m, int64_t row_blocks, int chunks, const GemmPlan& p, int blocks_at_once,
                             const GemmCosts& costs = {}) {
  if (blocks_at_once <= 0) return -1;
  const bool wide = p.tokens == 256;
  const int64_t tiles = (m + p.tokens - 1) / p.tokens * row_blocks;
  const int64_t waves = (tiles * p.splits + blocks_at_once - 1) / blocks_at_once;
  double block = costs.block_start + (chunks + p.splits - 1) / p.splits * (wide ? 1.0 : costs.chunk128);
  if (p.splits > 1)
    block += (costs.exchange_base + costs.exchange_per_split * p.splits) * (wide ? costs.exchange256 : 1.0);
  return static_cast<double>(waves) * block;
}

// blocks_at_once[t][s]: blocks of t = 0 (128 tokens) / 1 (256 tokens) that run at once in clusters
// of s (s = 1: the SMs; 0: clusters of s cannot run). limits: the cheapest plan within them (a
// split that K's chunks or the cluster limit do not allow becomes the largest that is; where
// clusters of that many cannot run, one block per tile).
inline GemmPlan plan_gemm(int64_t m, int64_t row_blocks, int chunks, const int (&blocks_at_once)[2][kGemmMaxSplits + 1],
                          const GemmPlanLimits& limits = {}, const GemmCosts& costs = {}) {
  int want = limits.splits < chunks ? limits.splits : chunks;
  want = want < kGemmMaxSplits ? want : kGemmMaxSplits;
  GemmPlan best{limits.tokens != 0 ? limits.tokens : 256, 1};
  double best_cost = -1;
  for (int t = 1; t >= 0; --t) {  // 256 tokens first: ties keep the larger multiply
    const GemmPlan tokens_only{t == 1 ? 256 : 128, 1};
    if (limits.tokens != 0 && limits.tokens != tokens_only.tokens) continue;
    for (int s = 1; s <= kGemmMaxSplits; ++s) {
      if (limits.splits > 0 ? s != want : s > 1 && chunks < s * costs.min_chunks_per_split) continue;
      const GemmPlan p{tokens_only.tokens, s};
      const double cost = gemm_plan_cost(m, row_blocks, chunks, p, blocks_at_once[t][s], costs);
      if (cost >= 0 && (best_cost < 0 || cost < best_cost)) {
        best_cost = cost;
        best = p;
      }
    }
  }
  return best;
}

}  // namespace compactor
