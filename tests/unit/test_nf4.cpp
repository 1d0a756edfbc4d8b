// NF4 with double-quantized scales (formats/nf4.h): FP8 E4M3 encode/decode (all codes, ties to
// even, saturation), exact codes of hand-made blocks, quantize -> pack -> dequantize error bounds,
// double quantization precision, odd shapes, int4 byte compatibility of qweight, validation
// messages and bits per weight.
// Run: build-*/tests/test_nf4
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "formats/nf4.h"
#include "formats/quant_pack.h"

namespace compactor {
namespace {

std::vector<float> random_weights(int64_t n, int64_t k, uint32_t seed, float std = 0.02f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.f, std);
  std::vector<float> w(n * k);
  for (float& x : w) x = dist(rng);
  return w;
}

TEST(E4M3, EveryFiniteCodeRoundTrips) {
  int finite = 0;
  for (int c = 0; c < 256; ++c) {
    const float v = e4m3_to_float(static_cast<uint8_t>(c));
    if (std::isnan(v)) {
      EXPECT_TRUE(c == 0x7F || c == 0xFF) << c;
      continue;
    }
    ++finite;
    EXPECT_EQ(float_to_e4m3(v), c) << "code " << c << " value " << v;
  }
  EXPECT_EQ(finite, 254);
  EXPECT_EQ(e4m3_to_float(0x7E), 448.f);
  EXPECT_EQ(e4m3_to_float(0x01), 1.f / 512.f);
  EXPECT_EQ(e4m3_to_float(0x08), 1.f / 64.f);
}

TEST(E4M3, MidpointsRoundToEvenAndNeighboursToNearest) {
  for (int c = 0; c < 0x7E; ++c) {
    const float lo = e4m3_to_float(static_cast<uint8_t>(c)), hi = e4m3_to_float(static_cast<uint8_t>(c + 1));
    const float mid = 0.5f * (lo + hi);  // exact in f32 (E4M3 values have 4 significant bits)
    const int even = (c % 2 == 0) ? c : c + 1;
    SCOPED_TRACE(testing::Message() << "codes " << c << ", " << c + 1 << " midpoint " << mid);
    EXPECT_EQ(float_to_e4m3(mid), even);
    EXPECT_EQ(float_to_e4m3(-mid), 0x80 | even);
    EXPECT_EQ(float_to_e4m3(std::nextafter(mid, 0.f)), c);
    EXPECT_EQ(float_to_e4m3(std::nextafter(mid, 1000.f)), c + 1);
  }
}

TEST(E4M3, SaturatesAndKeepsNaN) {
  EXPECT_EQ(float_to_e4m3(449.f), 0x7E);
  EXPECT_EQ(float_to_e4m3(1e30f), 0x7E);
  EXPECT_EQ(float_to_e4m3(INFINITY), 0x7E);
  EXPECT_EQ(float_to_e4m3(-1e30f), 0xFE);
  EXPECT_EQ(float_to_e4m3(NAN), 0x7F);
  EXPECT_EQ(float_to_e4m3(1e-9f), 0x00);
  EXPECT_EQ(float_to_e4m3(-0.f), 0x80);
}

TEST(NF4, ExactCodesOfHandMadeBlocks) {
  const int64_t k = 64 + 40;  // one full block and a partial one
  std::vector<float> w(2 * k);
  for (int64_t c = 0; c < k; ++c) w[c] = (c < 64 ? 2.5f : 0.75f) * kNF4Values[c % 16];
  for (int64_t c = 0; c < 64; ++c) w[k + c] = 0.f;  // an all-zero block
  for (int64_t c = 64; c < k; ++c) w[k + c] = (c % 2 ? 1.f : -1.f) * 0.5f * (kNF4Values[8] + kNF4Values[9]) * 3.f;
  w[k + 64] = 3.f;
  const NF4Linear q = quantize_nf4(w.data(), 2, k, 64);
  ASSERT_EQ(q.blocks(), 2);
  EXPECT_EQ(q.absmax, (std::vector<float>{2.5f, 0.75f, 0.f, 3.f}));
  for (int64_t c = 0; c < k; ++c) EXPECT_EQ(q.codes[c], c % 16) << c;
  for (int64_t c = 0; c < 64; ++c) EXPECT_EQ(q.codes[k + c], 7) << c;
  EXPECT_EQ(q.codes[k + 64], 15);
  // w/absmax lands near the midpoint of levels 8 and 9 (ties go to the lower level; rounding of
  // the product and quotient may land either side, so accept both neighbours)
  for (int64_t c = 65; c < k; ++c) {
    const int code = q.codes[k + c];
    if (c % 2) {
      EXPECT_TRUE(code == 8 || code == 9) << c << ": " << code;
    } else {
      EXPECT_TRUE(code == 5 || code == 6) << c << ": " << code;  // -0.1203: between -0.1848 and -0.0911
    }
  }
  EXPECT_EQ(nearest_nf4_code(-5.f), 0);
  EXPECT_EQ(nearest_nf4_code(5.f), 15);
  EXPECT_EQ(nearest_nf4_code(0.f), 7);
  for (int i = 0; i < 16; ++i) EXPECT_EQ(nearest_nf4_code(kNF4Values[i]), i);
}

// Packs random weights of odd shapes and checks every stated bound.
void check_round_trip(int64_t n, int64_t k, int block, uint32_t seed) {
  SCOPED_TRACE(testing::Message() << "N " << n << " K " << k << " block " << block);
  const std::vector<float> w = random_weights(n, k, seed);
  const NF4Linear q = quantize_nf4(w.data(), n, k, block);
  auto packed = pack_nf4(q);
  ASSERT_TRUE(packed.is_ok()) << packed.status().message();
  const int64_t g = q.blocks();
  EXPECT_EQ(g, (k + block - 1) / block);
  EXPECT_EQ(packed->qweight.shape(), (Shape{(k + 7) / 8, n}));
  EXPECT_EQ(packed->scales.shape(), (Shape{g, n}));
  EXPECT_EQ(packed->nested_scales.shape(), (Shape{(g * n + 255) / 256}));
  EXPECT_EQ(packed->bytes(), nf4_packed_bytes(n, k, block));
  const Status shapes = check_nf4_shapes("m", block, n, k, packed->qweight, packed->scales, packed->nested_scales,
                                         packed->nested_offset);
  EXPECT_TRUE(shapes.is_ok()) << shapes.message();
  const NF4Ref r = packed->ref();
  const NF4Linear u = unpack_nf4(r);
  EXPECT_EQ(u.codes, q.codes);

  // double quantization: |absmax - absmax'| <= 2^-4 · max |v| of the 256 block (E4M3 half ulp)
  const float offset = r.nested_offset[0];
  double mean = 0;
  for (float a : q.absmax) mean += a;
  EXPECT_NEAR(offset, mean / static_cast<double>(q.absmax.size()), 1e-6);
  std::vector<float> vmax((g * n + 255) / 256, 0.f);
  for (int64_t i = 0; i < g * n; ++i)
    vmax[i / 256] = std::max(vmax[i / 256], std::fabs(q.absmax[(i % n) * g + i / n] - offset));
  double worst_dq = 0;
  for (int64_t i = 0; i < g * n; ++i) {
    const int64_t row = i % n, b = i / n;
    const float err = std::fabs(u.absmax[row * g + b] - q.absmax[row * g + b]);
    EXPECT_LE(err, vmax[i / 256] * (1.f / 16.f) * (1 + 1e-5f) + 1e-9f) << "n " << row << " block " << b;
    worst_dq = std::max<double>(worst_dq, err);
  }

  // |w - w'| <= absmax·(half the largest level gap) + |absmax - absmax'| (|level| <= 1)
  float half_gap = 0.f;  // the widest gap is [-1, -0.696]
  for (int i = 0; i < 15; ++i) half_gap = std::max(half_gap, 0.5f * (kNF4Values[i + 1] - kNF4Values[i]));
  std::vector<float> deq(n * k);
  dequantize_nf4_ref(r, deq.data());
  double worst = 0;
  for (int64_t row = 0; row < n; ++row)
    for (int64_t c = 0; c < k; ++c) {
      const float a = q.absmax[row * g + c / block], a2 = u.absmax[row * g + c / block];
      const float bound = a * half_gap + std::fabs(a - a2) + 1e-7f;
      const float err = std::fabs(w[row * k + c] - deq[row * k + c]);
      ASSERT_LE(err, bound) << "n " << row << " k " << c;
      ASSERT_EQ(deq[row * k + c], u.dequantized(row, c));
      worst = std::max<double>(worst, err);
    }
  std::printf("nf4 N %lld K %lld block %d: max |w - w'| %.3g, max |absmax - absmax'| %.3g\n",
              static_cast<long long>(n), static_cast<long long>(k), block, worst, worst_dq);
}

TEST(NF4, QuantizePackDequantizeErrorBoundsOddShapes) {
  check_round_trip(37, 200, 64, 1);   // G*N = 148 < 256: one partial nested block
  check_round_trip(300, 100, 64, 2);  // G = 2 with a partial block; 600 entries: 3 nested blocks
  check_round_trip(256, 128, 64, 3);  // exact multiples
  check_round_trip(5, 13, 64, 4);     // K < block
  check_round_trip(19, 96, 32, 5);    // another block size
}

TEST(NF4, QweightIsInt4PackingOfTheCodes) {
  const std::vector<float> w = random_weights(11, 70, 7);
  const NF4Linear q = quantize_nf4(w.data(), 11, 70);
  auto nf4 = pack_nf4(q);
  ASSERT_TRUE(nf4.is_ok());
  QuantizedLinear lin;
  lin.spec = QuantSpec{4, 0, false};
  lin.out_features = 11;
  lin.in_features = 70;
  lin.codes = q.codes;
  lin.scales.assign(11, 1.f);
  lin.zeros.assign(11, 0.f);
  auto int4 = pack_linear(lin);
  ASSERT_TRUE(int4.is_ok());
  ASSERT_EQ(nf4->qweight.bytes(), int4->qweight.bytes());
  EXPECT_EQ(0, std::memcmp(nf4->qweight.data(), int4->qweight.data(), nf4->qweight.bytes()));
}

TEST(NF4, ConstantAbsmaxDoubleQuantizesExactly) {
  std::vector<float> w(4 * 128, 0.5f);
  const NF4Linear q = quantize_nf4(w.data(), 4, 128);
  auto p = pack_nf4(q);
  ASSERT_TRUE(p.is_ok());
  EXPECT_EQ(p->nested_scales.as<float>()[0], 0.f);  // all v = 0
  std::vector<float> deq(w.size());
  dequantize_nf4_ref(p->ref(), deq.data());
  EXPECT_EQ(deq, w);
}

TEST(NF4, RejectsBadLinearsAndShapes) {
  const std::vector<float> w = random_weights(4, 64, 9);
  NF4Linear q = quantize_nf4(w.data(), 4, 64);
  NF4Linear bad = q;
  bad.codes[5] = 16;
  EXPECT_NE(pack_nf4(bad).status().message().find("code 16 at [0, 5]"), std::string::npos);
  bad = q;
  bad.absmax[2] = -1.f;
  EXPECT_NE(pack_nf4(bad).status().message().find("absmax -1 at [n 2, block 0]"), std::string::npos);
  bad = q;
  bad.absmax.pop_back();
  EXPECT_NE(pack_nf4(bad).status().message().find("absmax has 3 entries"), std::string::npos);

  auto p = pack_nf4(q);
  ASSERT_TRUE(p.is_ok());
  Tensor f16_scales = Tensor::zeros(Shape{1, 4}, DType::kF16);
  Status s = check_nf4_shapes("layers.0.q", 64, 4, 64, p->qweight, f16_scales, p->nested_scales, p->nested_offset);
  EXPECT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("'layers.0.q.scales' is f16 [1, 4]"), std::string::npos) << s.message();
  s = check_nf4_shapes("layers.0.q", 64, 5, 64, p->qweight, p->scales, p->nested_scales, p->nested_offset);
  EXPECT_NE(s.message().find("'layers.0.q.qweight'"), std::string::npos) << s.message();
  s = check_nf4_shapes("layers.0.q", 32, 4, 64, p->qweight, p->scales, p->nested_scales, p->nested_offset);
  EXPECT_NE(s.message().find("'layers.0.q.scales'"), std::string::npos) << s.message();
  s = check_nf4_shapes("layers.0.q", 64, 4, 64, p->qweight, p->scales, p->nested_scales, View{});
  EXPECT_NE(s.message().find("'layers.0.q.nested_offset' is missing"), std::string::npos) << s.message();
  Tensor wide = Tensor::zeros(Shape{2}, DType::kF32);
  s = check_nf4_shapes("layers.0.q", 64, 4, 64, p->qweight, p->scales, wide, p->nested_offset);
  EXPECT_NE(s.message().find("'layers.0.q.nested_scales' is f32 [2]"), std::string::npos) << s.message();
}

TEST(NF4, BitsPerWeight) {
  EXPECT_NEAR(nf4_bits_per_weight(4096, 4096), 4.127, 0.001);
  EXPECT_NEAR(nf4_bits_per_weight(11008, 4096), 4 + 8.0 / 64 + 32.0 / (64 * 256), 1e-5);
  std::printf("nf4 bits per weight 4096x4096 block 64: %.4f\n", nf4_bits_per_weight(4096, 4096));
}

}  // namespace
}  // namespace compactor
