// Packed intN formats (formats/quant_pack.h): pack∘unpack identity over bits × group × sym ×
// act-order × odd shapes, byte compatibility with hand-computed GPTQ words (int4, int8, int2) and
// with a literal transcription of GPTQ's 3-bit packing loop, reference dequantization, validation
// errors, bits per weight and the preset table.
// Run: build-*/tests/test_quant_pack
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "formats/format.h"
#include "formats/quant_pack.h"
#include "support/quant_fixtures.h"

namespace compactor {
namespace {

QuantizedLinear random_linear(int bits, int group, bool sym, bool act_order, int64_t n, int64_t k, uint32_t seed) {
  return test::random_quantized_linear(bits, group, sym, act_order, n, k, seed);
}

void expect_same(const QuantizedLinear& a, const QuantizedLinear& b) {
  EXPECT_EQ(a.spec.bits, b.spec.bits);
  EXPECT_EQ(a.spec.group_size, b.spec.group_size);
  EXPECT_EQ(a.spec.symmetric, b.spec.symmetric);
  EXPECT_EQ(a.out_features, b.out_features);
  EXPECT_EQ(a.in_features, b.in_features);
  EXPECT_EQ(a.codes, b.codes);
  EXPECT_EQ(a.scales, b.scales);
  EXPECT_EQ(a.zeros, b.zeros);
  EXPECT_EQ(a.g_idx, b.g_idx);
}

TEST(QuantPack, RoundTripEveryBitsGroupSymActOrderAndOddShape) {
  const std::pair<int64_t, int64_t> shapes[] = {{1, 32}, {7, 40}, {33, 131}, {5, 256}, {3, 1}};
  uint32_t seed = 1;
  int cases = 0;
  for (int bits : {2, 3, 4, 8}) {
    for (int group : {0, 16, 32, 128}) {
      for (bool sym : {false, true}) {
        for (bool act : {false, true}) {
          if (act && group == 0) continue;
          for (auto [n, k] : shapes) {
            SCOPED_TRACE(testing::Message() << "bits " << bits << " group " << group << " sym " << sym << " act "
                                            << act << " N " << n << " K " << k);
            const QuantizedLinear q = random_linear(bits, group, sym, act, n, k, seed++);
            auto packed = pack_linear(q);
            ASSERT_TRUE(packed.is_ok()) << packed.status().message();
            EXPECT_EQ(packed->qweight.shape(), (Shape{packed_words(bits, k), n}));
            EXPECT_EQ(packed->qzeros.shape(), (Shape{q.groups(), packed_words(bits, n)}));
            EXPECT_EQ(packed->scales.shape(), (Shape{q.groups(), n}));
            EXPECT_EQ(packed->act_order(), act);
            expect_same(unpack_linear(packed->ref(), sym), q);
            std::vector<float> from_packed(n * k), from_unpacked(n * k);
            dequantize_ref(packed->ref(), from_packed.data());
            dequantize_ref(q, from_unpacked.data());
            EXPECT_EQ(from_packed, from_unpacked);
            ++cases;
          }
        }
      }
    }
  }
  EXPECT_EQ(cases, 4 * (4 * 2 + 3 * 2) * 5);
}

// Hand-computed GPTQ words: 4-bit codes k = 0..7 of a column pack into one int32, k = 0 lowest.
TEST(QuantPack, Int4BytesMatchHandComputedGptqWords) {
  QuantizedLinear q;
  q.spec = QuantSpec{4, 0, false};
  q.out_features = 2;
  q.in_features = 8;
  q.codes = {0, 1, 2, 3, 4, 5, 6, 7, 15, 14, 13, 12, 11, 10, 9, 8};
  q.scales = {0.5f, 1.0f};
  q.zeros = {3, 12};
  auto p = pack_linear(q);
  ASSERT_TRUE(p.is_ok()) << p.status().message();
  ASSERT_EQ(p->qweight.shape(), (Shape{1, 2}));
  EXPECT_EQ(static_cast<uint32_t>(p->qweight.as<int32_t>()[0]), 0x76543210u);
  EXPECT_EQ(static_cast<uint32_t>(p->qweight.as<int32_t>()[1]), 0x89ABCDEFu);
  ASSERT_EQ(p->qzeros.shape(), (Shape{1, 1}));
  EXPECT_EQ(static_cast<uint32_t>(p->qzeros.as<int32_t>()[0]), 0xC3u);  // n=0: 3 in bits 0-3, n=1: 12 in 4-7
  EXPECT_EQ(p->scales.as<uint16_t>()[0], 0x3800);  // f16 0.5
  EXPECT_EQ(p->scales.as<uint16_t>()[1], 0x3C00);  // f16 1.0
  // Little-endian bytes of the file: 10 32 54 76 | EF CD AB 89
  const auto* bytes = p->qweight.as<const uint8_t>();
  const uint8_t expected[] = {0x10, 0x32, 0x54, 0x76, 0xEF, 0xCD, 0xAB, 0x89};
  for (int i = 0; i < 8; ++i) EXPECT_EQ(bytes[i], expected[i]) << "byte " << i;
  std::vector<float> w(16);
  dequantize_ref(p->ref(), w.data());
  EXPECT_EQ(w[0], (0 - 3) * 0.5f);
  EXPECT_EQ(w[7], (7 - 3) * 0.5f);
  EXPECT_EQ(w[8], (15 - 12) * 1.0f);
}

TEST(QuantPack, Int8AndInt2BytesMatchHandComputedWords) {
  QuantizedLinear q8;
  q8.spec = QuantSpec{8, 0, false};
  q8.out_features = 1;
  q8.in_features = 5;
  q8.codes = {1, 2, 3, 4, 255};
  q8.scales = {1.f};
  q8.zeros = {128};
  auto p8 = pack_linear(q8);
  ASSERT_TRUE(p8.is_ok());
  ASSERT_EQ(p8->qweight.shape(), (Shape{2, 1}));
  EXPECT_EQ(static_cast<uint32_t>(p8->qweight.as<int32_t>()[0]), 0x04030201u);
  EXPECT_EQ(static_cast<uint32_t>(p8->qweight.as<int32_t>()[1]), 0x000000FFu);  // zero-padded last word

  QuantizedLinear q2;
  q2.spec = QuantSpec{2, 0, false};
  q2.out_features = 1;
  q2.in_features = 16;
  q2.codes = {3, 0, 1, 2, 3, 3, 3, 3, 0, 0, 0, 0, 0, 0, 0, 1};
  q2.scales = {1.f};
  q2.zeros = {2};
  auto p2 = pack_linear(q2);
  ASSERT_TRUE(p2.is_ok());
  // codes 0-3 -> 0b10'01'00'11 = 0x93; 4-7 -> 0xFF; 8-11 -> 0; 12-15 -> 0b01'00'00'00 = 0x40
  EXPECT_EQ(static_cast<uint32_t>(p2->qweight.as<int32_t>()[0]), 0x4000FF93u);
}

// GPTQ's pack() loop for 3 bits (gptq/quant.py, QuantLinear.pack), transcribed line by line.
std::vector<uint32_t> gptq_pack3(const std::vector<uint32_t>& intweight /*[K] one column*/) {
  std::vector<uint32_t> qweight(intweight.size() / 32 * 3, 0);
  size_t i = 0, row = 0;
  while (row < qweight.size()) {
    for (size_t j = i; j < i + 10; ++j) qweight[row] |= intweight[j] << (3 * (j - i));
    i += 10;
    qweight[row] |= intweight[i] << 30;
    row += 1;
    qweight[row] |= (intweight[i] >> 2) & 1;
    i += 1;
    for (size_t j = i; j < i + 10; ++j) qweight[row] |= intweight[j] << (3 * (j - i) + 1);
    i += 10;
    qweight[row] |= intweight[i] << 31;
    row += 1;
    qweight[row] |= (intweight[i] >> 1) & 0x3;
    i += 1;
    for (size_t j = i; j < i + 10; ++j) qweight[row] |= intweight[j] << (3 * (j - i) + 2);
    i += 10;
    row += 1;
  }
  return qweight;
}

TEST(QuantPack, Int3MatchesGptqThreeWordScheme) {
  const int64_t n = 3, k = 96;
  const QuantizedLinear q = random_linear(3, 32, false, false, n, k, 77);
  auto p = pack_linear(q);
  ASSERT_TRUE(p.is_ok());
  ASSERT_EQ(p->qweight.shape(), (Shape{9, n}));
  for (int64_t col = 0; col < n; ++col) {
    std::vector<uint32_t> codes(k);
    for (int64_t i = 0; i < k; ++i) codes[i] = q.codes[col * k + i];
    const std::vector<uint32_t> expected = gptq_pack3(codes);
    for (int64_t r = 0; r < 9; ++r)
      EXPECT_EQ(static_cast<uint32_t>(p->qweight.as<int32_t>()[r * n + col]), expected[r]) << "row " << r << " col " << col;
  }
  // qzeros are packed along N with the same scheme: N = 32 zeros of one group fill 3 words.
  const QuantizedLinear wide = random_linear(3, 0, false, false, 32, 8, 78);
  auto pw = pack_linear(wide);
  ASSERT_TRUE(pw.is_ok());
  std::vector<uint32_t> zeros(32);
  for (int i = 0; i < 32; ++i) zeros[i] = static_cast<uint32_t>(wide.zeros[i]);
  const std::vector<uint32_t> expected = gptq_pack3(zeros);
  for (int r = 0; r < 3; ++r) EXPECT_EQ(static_cast<uint32_t>(pw->qzeros.as<int32_t>()[r]), expected[r]);
}

TEST(QuantPack, ValidationErrorsNameTheField) {
  QuantizedLinear q = random_linear(4, 16, false, false, 2, 32, 5);
  q.codes[3] = 16;
  auto r = pack_linear(q);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("code 16 at [0, 3]"), std::string::npos) << r.status().message();

  q = random_linear(4, 16, false, false, 2, 32, 5);
  q.zeros[1] = 2.5f;
  r = pack_linear(q);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("zero 2.5"), std::string::npos) << r.status().message();

  q = random_linear(4, 16, true, false, 2, 32, 5);
  q.zeros[0] = 7;
  r = pack_linear(q);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("symmetric"), std::string::npos) << r.status().message();

  q = random_linear(4, 16, false, true, 2, 32, 5);
  q.g_idx[4] = 2;
  r = pack_linear(q);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("g_idx[4] = 2"), std::string::npos) << r.status().message();

  q = random_linear(4, 16, false, false, 2, 32, 5);
  q.scales.pop_back();
  r = pack_linear(q);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("scales/zeros"), std::string::npos) << r.status().message();

  q = random_linear(4, 16, false, false, 2, 32, 5);
  q.spec.bits = 5;
  EXPECT_FALSE(pack_linear(q).is_ok());
}

TEST(QuantPack, CheckPackedShapesNamesModuleAndTensor) {
  const QuantizedLinear q = random_linear(4, 16, false, false, 6, 48, 9);
  auto p = pack_linear(q);
  ASSERT_TRUE(p.is_ok());
  EXPECT_TRUE(check_packed_shapes("m", 4, 16, 6, 48, p->qweight, p->scales, p->qzeros, View{}).is_ok());
  Status s = check_packed_shapes("model.layers.0.mlp.up_proj", 4, 32, 6, 48, p->qweight, p->scales, p->qzeros, View{});
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("model.layers.0.mlp.up_proj.scales"), std::string::npos) << s.message();
  s = check_packed_shapes("m", 3, 16, 6, 48, p->qweight, p->scales, p->qzeros, View{});
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("m.qweight"), std::string::npos) << s.message();
}

TEST(QuantPack, BitsPerWeightIncludesScalesZerosAndGidx) {
  const int64_t n = 4096, k = 4096;
  EXPECT_DOUBLE_EQ(quant_bits_per_weight(QuantSpec{4, 128, false}, n, k, false), 4.0 + 16.0 / 128 + 4.0 / 128);
  EXPECT_DOUBLE_EQ(quant_bits_per_weight(QuantSpec{4, 128, false}, n, k, true), 4.0 + 16.0 / 128 + 4.0 / 128 + 32.0 / n);
  EXPECT_DOUBLE_EQ(quant_bits_per_weight(QuantSpec{8, 0, true}, n, k, false), 8.0 + 16.0 / k + 8.0 / k);
  EXPECT_DOUBLE_EQ(quant_bits_per_weight(QuantSpec{3, 64, false}, n, k, false), 3.0 + 16.0 / 64 + 3.0 / 64);
  const QuantizedLinear q = random_linear(3, 32, false, true, 7, 100, 3);
  auto p = pack_linear(q);
  ASSERT_TRUE(p.is_ok());
  EXPECT_EQ(p->bytes(), quant_packed_bytes(q.spec, 7, 100, true));
}

TEST(QuantFormats, TableRowsAndPresets) {
  Format f;
  ASSERT_TRUE(format_from_bits(3, &f));
  EXPECT_EQ(f, Format::kInt3);
  EXPECT_EQ(format_name(Format::kInt4), "int4");
  EXPECT_TRUE(format_is_quantized(Format::kInt2));
  EXPECT_FALSE(format_is_quantized(Format::kBF16));
  EXPECT_FALSE(format_is_dense(Format::kInt8));
  EXPECT_FALSE(format_from_bits(5, &f));
  for (Format q : {Format::kInt8, Format::kInt4, Format::kInt3, Format::kInt2}) {
    const FormatInfo& info = format_info(q);
    EXPECT_EQ(info.block_bytes * 8, info.block_elems * info.bits) << info.name;
    Format back;
    ASSERT_TRUE(format_from_name(info.name, &back));
    EXPECT_EQ(back, q);
  }
  const QuantPreset* p = find_quant_preset("w4g128");
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->bits, 4);
  EXPECT_EQ(p->group_size, 128);
  ASSERT_NE(find_quant_preset("w8"), nullptr);
  EXPECT_EQ(find_quant_preset("w8")->group_size, 0);
  EXPECT_EQ(find_quant_preset("w5g7"), nullptr);
}

}  // namespace
}  // namespace compactor
