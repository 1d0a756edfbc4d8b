// Bounded randomized corruption of a small safetensors file (fixed seed, 500 mutations of the
// header region: bit flips, byte overwrites, digit swaps, deletions, truncations). Every open must
// either fail with a message naming the file or yield tensors whose views lie inside the file and
// hold exactly the file's bytes; never a crash.
// Run: build-*/tests/test_io_fuzz   (for stronger checking build with -DCOMPACTOR_SANITIZE=ON)
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <random>

#include "io/safetensors.h"
#include "support/fixtures.h"

namespace compactor {
namespace {

namespace fs = std::filesystem;

constexpr int kIterations = 500;
constexpr uint32_t kSeed = 20240607;

std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void write_bytes(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

uint64_t header_length(const std::string& bytes) {
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[i]);
  return n;
}

// A file with several dtypes, an empty tensor and names/shapes full of digits to mutate.
std::string make_seed_file(const fs::path& path) {
  static std::vector<float> f32(12, 1.5f);
  static std::vector<uint16_t> bf16(5, 0x3f80);
  static std::vector<int32_t> i32{1, 2, 3, 4};
  static std::vector<uint16_t> f16(3, 0x3c00);
  static std::vector<uint8_t> u8(7, 9);
  std::vector<NamedView> t{
      {"layers.10.w", View{f32.data(), {3, 4}, DType::kF32}}, {"layers.2.b", View{bf16.data(), {5}, DType::kBF16}},
      {"idx.33", View{i32.data(), {2, 2}, DType::kI32}},      {"h.4", View{f16.data(), {1, 1, 1, 3}, DType::kF16}},
      {"mask.5", View{u8.data(), {7}, DType::kU8}},           {"none.6", View{nullptr, {0, 8}, DType::kF32}},
  };
  EXPECT_TRUE(write_safetensors(path, t, {{"format", "pt"}, {"step", "1234"}}).is_ok());
  return read_bytes(path);
}

std::string mutate(const std::string& base, std::mt19937& rng, int* kind_out) {
  std::string s = base;
  const size_t header_end = std::min<size_t>(s.size(), 8 + header_length(base));
  auto pick = [&](size_t lo, size_t hi) { return std::uniform_int_distribution<size_t>(lo, hi - 1)(rng); };
  int kind = static_cast<int>(pick(0, 6));
  *kind_out = kind;
  switch (kind) {
    case 0:  // flip 1-4 bits anywhere in the length prefix or header
      for (size_t k = pick(1, 5); k > 0; --k) s[pick(0, header_end)] ^= static_cast<char>(1u << pick(0, 8));
      break;
    case 1:  // overwrite one header byte with a random byte
      s[pick(8, header_end)] = static_cast<char>(pick(0, 256));
      break;
    case 2: {  // replace a digit in the header by another digit: stays JSON, changes shapes/offsets/names
      std::vector<size_t> digits;
      for (size_t i = 8; i < header_end; ++i)
        if (s[i] >= '0' && s[i] <= '9') digits.push_back(i);
      s[digits[pick(0, digits.size())]] = static_cast<char>('0' + pick(0, 10));
      break;
    }
    case 3:  // delete a header byte and fix the length prefix
      s.erase(pick(8, header_end), 1);
      for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((header_length(base) - 1) >> (8 * i));
      break;
    case 4:  // one byte of the length prefix
      s[pick(0, 8)] = static_cast<char>(pick(0, 256));
      break;
    default:  // truncate anywhere
      s.resize(pick(0, s.size()));
      break;
  }
  return s;
}

// Checks a file that opened: every tensor lies inside the bytes on disk and views exactly them.
void check_valid(const SafetensorsFile& f, const std::string& bytes, int iteration) {
  const uint64_t n = header_length(bytes);
  ASSERT_LE(8 + n, bytes.size()) << iteration;
  ASSERT_EQ(f.data_start(), 8 + n);
  ASSERT_EQ(f.file_size(), bytes.size());
  uint64_t prev_end = 0;
  for (const TensorEntry& e : f.tensors()) {
    ASSERT_LE(e.begin, e.end) << iteration << " " << e.name;
    ASSERT_LE(8 + n + e.end, bytes.size()) << iteration << " " << e.name;
    View v = e.view();
    ASSERT_EQ(static_cast<uint64_t>(v.bytes()), e.bytes()) << iteration << " " << e.name;
    ASSERT_EQ(f.find(e.name), &e);
    if (e.bytes() == 0) continue;
    ASSERT_GE(e.begin, prev_end) << iteration << ": '" << e.name << "' overlaps its predecessor";
    prev_end = e.end;
    ASSERT_EQ(std::memcmp(v.data, bytes.data() + 8 + n + e.begin, e.bytes()), 0) << iteration << " " << e.name;
  }
}

TEST(IoFuzz, HeaderCorruptionGivesErrorOrValidFile) {
  fs::path dir = test::make_temp_dir("compactor-fuzz");
  const std::string base = make_seed_file(dir / "seed.safetensors");
  ASSERT_GT(base.size(), 64u);
  std::mt19937 rng(kSeed);
  int valid = 0, errors = 0;
  int per_kind_errors[6] = {};
  const fs::path path = dir / "mutant.safetensors";
  for (int it = 0; it < kIterations; ++it) {
    int kind = 0;
    std::string bytes = mutate(base, rng, &kind);
    write_bytes(path, bytes);
    auto f = SafetensorsFile::open(path);
    if (f.is_ok()) {
      ++valid;
      check_valid(**f, bytes, it);
      if (HasFatalFailure()) break;
    } else {
      ++errors;
      ++per_kind_errors[kind];
      EXPECT_NE(f.status().message().find(path.string()), std::string::npos) << it << ": " << f.status().message();
      EXPECT_NE(f.status().code(), StatusCode::kInternal) << f.status().message();
    }
  }
  // Both outcomes must occur, or the mutations test nothing.
  EXPECT_GT(valid, 10);
  EXPECT_GT(errors, kIterations / 4);
  for (int k = 0; k < 6; ++k) EXPECT_GT(per_kind_errors[k], 0) << "mutation kind " << k << " never produced an error";
  fs::remove_all(dir);
}

}  // namespace
}  // namespace compactor
