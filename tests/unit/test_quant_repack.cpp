// Repacked intN layout (formats/quant_repack.h): pack -> repack -> unpack is the identity over
// bits 2/3/4/8 × group 0/32/64/128 × sym/asym × act-order × odd N and K; the block bit layouts
// against hand-written words; plan sizes; unsupported group sizes and irregular g_idx.
// Run: build-*/tests/test_quant_repack
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

#include "formats/quant_pack.h"
#include "formats/quant_repack.h"
#include "support/quant_fixtures.h"

namespace compactor {
namespace {

QuantizedLinear random_linear(int bits, int group, bool sym, bool act_order, int64_t n, int64_t k, uint32_t seed) {
  return test::random_quantized_linear(bits, group, sym, act_order, n, k, seed);
}

TEST(QuantRepack, RoundTripEveryBitsGroupSymActOrderAndOddShape) {
  const std::pair<int64_t, int64_t> shapes[] = {{1, 32}, {7, 200}, {33, 131}, {5, 256}, {3, 1}, {4, 1000}};
  uint32_t seed = 1;
  int cases = 0;
  for (int bits : {2, 3, 4, 8})
    for (int group : {0, 32, 64, 128})
      for (bool sym : {false, true})
        for (bool act : {false, true}) {
          if (act && group == 0) continue;
          for (const auto& [n, k] : shapes) {
            const QuantizedLinear q = random_linear(bits, group, sym, act, n, k, seed++);
            auto packed = pack_linear(q);
            ASSERT_TRUE(packed.is_ok()) << packed.status().message();
            auto repacked = repack_linear_ref(packed->ref());
            ASSERT_TRUE(repacked.is_ok()) << repacked.status().message();
            const RepackPlan& plan = repacked->plan;
            EXPECT_EQ(plan.k_padded % kRepackTileK, 0);
            EXPECT_GE(plan.k_padded, k);
            EXPECT_EQ(static_cast<int64_t>(repacked->qweight.size()), n * plan.k_padded * bits / 32);
            EXPECT_EQ(static_cast<int64_t>(repacked->scale_zero.size()), n * plan.groups_padded);
            const QuantizedLinear back = unpack_repacked_ref(*repacked, sym);
            const std::string what =
                fmt::format("int{} group {} sym {} act {} [{}, {}]", bits, group, sym, act, n, k);
            EXPECT_EQ(back.codes, q.codes) << what;
            EXPECT_EQ(back.scales, q.scales) << what;
            EXPECT_EQ(back.zeros, q.zeros) << what;
            EXPECT_EQ(back.g_idx, q.g_idx) << what;
            ++cases;
          }
        }
  EXPECT_EQ(cases, 4 * (4 * 2 + 3 * 2) * 6);
}

TEST(QuantRepack, PaddingCodesAreZeroAndPermutationCoversEveryColumn) {
  const QuantizedLinear q = random_linear(4, 32, false, true, 3, 100, 7);
  auto packed = pack_linear(q);
  ASSERT_TRUE(packed.is_ok());
  auto r = repack_linear_ref(packed->ref());
  ASSERT_TRUE(r.is_ok());
  ASSERT_EQ(r->plan.k_padded, 128);
  ASSERT_EQ(static_cast<int64_t>(r->perm.size()), 128);
  std::vector<int32_t> cols(r->perm.begin(), r->perm.begin() + 100);
  std::sort(cols.begin(), cols.end());
  for (int i = 0; i < 100; ++i) EXPECT_EQ(cols[i], i);
  for (int p = 100; p < 128; ++p) EXPECT_EQ(r->perm[p], -1);
  for (int64_t row = 0; row < 3; ++row)
    for (int p = 100; p < 128; ++p)
      EXPECT_EQ(repacked_code(&r->qweight[row * r->plan.words_per_row + (p / 32) * 4], 4, p % 32), 0u);
  EXPECT_EQ(r->plan.groups_padded, 4);
  // K = 130, group 64: 3 real groups, Kp = 256 holds 4; the padding group is all zero.
  auto packed2 = pack_linear(random_linear(2, 64, false, false, 5, 130, 8));
  ASSERT_TRUE(packed2.is_ok());
  auto r2 = repack_linear_ref(packed2->ref());
  ASSERT_TRUE(r2.is_ok());
  ASSERT_EQ(r2->plan.groups_padded, 4);
  for (int64_t row = 0; row < 5; ++row) {
    EXPECT_EQ(r2->scale_zero[row * 4 + 3], 0u);
    EXPECT_NE(r2->scale_zero[row * 4 + 2] & 0xffffu, 0u);
  }
}

TEST(QuantRepack, BlockBitLayouts) {
  uint32_t codes[32];
  for (int i = 0; i < 32; ++i) codes[i] = static_cast<uint32_t>(i);
  uint32_t w[8];
  for (int i = 0; i < 32; ++i) codes[i] = i & 15;
  pack_repacked_block(codes, 4, w);
  EXPECT_EQ(w[0], 0x76543210u);
  EXPECT_EQ(w[1], 0xfedcba98u);
  for (int i = 0; i < 32; ++i) codes[i] = i & 255;
  pack_repacked_block(codes, 8, w);
  EXPECT_EQ(w[0], 0x03020100u);
  EXPECT_EQ(w[7], 0x1f1e1d1cu);
  for (int i = 0; i < 32; ++i) codes[i] = i & 3;
  pack_repacked_block(codes, 2, w);
  EXPECT_EQ(w[0], 0xe4e4e4e4u);
  // int3: c(10j+i) at bits 3i of word j; t = c30 | c31 << 3 spread over bits 30-31 of the words.
  for (int i = 0; i < 32; ++i) codes[i] = 0;
  codes[0] = 5;
  codes[19] = 7;  // word 1, i = 9: bits 27..29
  codes[30] = 6;  // t = 0b(c31)(110)
  codes[31] = 3;  // t = 0b011110 = 30: word0 gets 0b10, word1 0b11, word2 0b01
  pack_repacked_block(codes, 3, w);
  EXPECT_EQ(w[0], 5u | (2u << 30));
  EXPECT_EQ(w[1], (7u << 27) | (3u << 30));
  EXPECT_EQ(w[2], 1u << 30);
  for (int i = 0; i < 32; ++i) EXPECT_EQ(repacked_code(w, 3, i), codes[i]) << i;
}

TEST(QuantRepack, PlanSizesAndShift) {
  auto plan = plan_repack(4, 128, 11008, 4096, nullptr, nullptr);
  ASSERT_TRUE(plan.is_ok());
  EXPECT_EQ(plan->k_padded, 4096);
  EXPECT_EQ(plan->words_per_row, 512);
  EXPECT_EQ(plan->groups_padded, 32);
  EXPECT_EQ(plan->group_shift, 7);
  auto per_channel = plan_repack(8, 0, 10, 300, nullptr, nullptr);
  ASSERT_TRUE(per_channel.is_ok());
  EXPECT_EQ(per_channel->k_padded, 384);
  EXPECT_EQ(per_channel->groups_padded, 1);
  EXPECT_EQ(per_channel->group_shift, 31);
  auto int3 = plan_repack(3, 64, 2, 200, nullptr, nullptr);
  ASSERT_TRUE(int3.is_ok());
  EXPECT_EQ(int3->k_padded, 256);
  EXPECT_EQ(int3->words_per_row, 24);
  EXPECT_EQ(int3->groups_padded, 4);
}

TEST(QuantRepack, TensorCoreLayoutsHoldEveryCodeOnce) {
  uint32_t seed = 40;
  for (int bits : {4, 8})
    for (bool act : {false, true})
      for (const auto& [n, k] : {std::pair<int64_t, int64_t>{16, 64}, {37, 200}, {5, 300}}) {
        const QuantizedLinear q = random_linear(bits, 32, false, act, n, k, seed++);
        auto packed = pack_linear(q);
        ASSERT_TRUE(packed.is_ok());
        auto r = repack_linear_ref(packed->ref());
        ASSERT_TRUE(r.is_ok());
        const std::vector<uint32_t> tc = repack_tc_ref(*r);
        const int64_t chunks = tc_chunks(r->plan), rows = tc_padded_rows(n);
        ASSERT_EQ(static_cast<int64_t>(tc.size()), rows * r->plan.k_padded * bits / 32);
        for (int64_t row = 0; row < rows; ++row)
          for (int64_t pos = 0; pos < r->plan.k_padded; ++pos) {
            const int64_t col = act ? r->perm[pos] : (pos < k ? pos : -1);
            const uint32_t want = row < n && col >= 0 ? q.codes[row * k + col] : 0u;
            ASSERT_EQ(tc_code(tc, bits, chunks, row, pos), want)
                << "int" << bits << " row " << row << " pos " << pos << " act " << act;
          }
        // The source functions are the inverse of tc_code's addressing.
        const int per_word = 32 / bits;
        for (int64_t word = 0; word < static_cast<int64_t>(tc.size()); word += 7)
          for (int qi = 0; qi < per_word; ++qi) {
            int64_t row = 0, pos = 0;
            if (bits == 4) {
              tc_int4_source(word, qi, chunks, &row, &pos);
            } else {
              tc_int8_source(word, qi, chunks, &row, &pos);
            }
            EXPECT_EQ(tc_code(tc, bits, chunks, row, pos), (tc[word] >> (bits * qi)) & ((1u << bits) - 1u));
          }
      }
  // int4, lane 5 (g 1, t 1), step 0 of the first tile: pair 0 = row 1 positions 4, 5; pair 1 = row 9.
  int64_t row = 0, pos = 0;
  tc_int4_source(5 * 4, 0, 1, &row, &pos);
  EXPECT_EQ(row, 1);
  EXPECT_EQ(pos, 4);
  tc_int4_source(5 * 4 + 2, 7, 1, &row, &pos);  // step 2, pair 3 second: row 9, position 32 + 4 + 2 + 1
  EXPECT_EQ(row, 9);
  EXPECT_EQ(pos, 39);
  // int8, lane 5, word 3 (step 1, row g + 8), byte 2: row 9, position 16 + 4 + 2.
  tc_int8_source(5 * 4 + 3, 2, 1, &row, &pos);
  EXPECT_EQ(row, 9);
  EXPECT_EQ(pos, 22);
}

TEST(QuantRepack, UnsupportedGroupSizesAndIrregularActOrder) {
  for (int group : {16, 48, 96}) {
    auto plan = plan_repack(4, group, 8, 256, nullptr, nullptr);
    ASSERT_FALSE(plan.is_ok()) << group;
    EXPECT_EQ(plan.status().code(), StatusCode::kUnsupported);
    EXPECT_NE(plan.status().message().find("group size"), std::string::npos) << plan.status().message();
  }
  std::vector<int32_t> g_idx(128, 0);  // every column in group 0: groups are not of size 64
  std::vector<int32_t> perm;
  auto plan = plan_repack(4, 64, 8, 128, g_idx.data(), &perm);
  ASSERT_FALSE(plan.is_ok());
  EXPECT_EQ(plan.status().code(), StatusCode::kUnsupported);
  EXPECT_NE(plan.status().message().find("g_idx"), std::string::npos) << plan.status().message();
  EXPECT_FALSE(plan_repack(5, 32, 8, 128, nullptr, nullptr).is_ok());
}

}  // namespace
}  // namespace compactor
