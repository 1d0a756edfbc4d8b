// safetensors reader/writer and WeightFiles: the fixture models, write->read round trips, a
// sharded directory built in-test, and every corrupt-header case generated in-test.
// Run: build-*/tests/test_safetensors
#include <gtest/gtest.h>

#include <cctype>
#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>

#include "io/hf_config.h"
#include "io/safetensors.h"
#include "support/fixtures.h"

namespace compactor {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void write_bytes(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A raw safetensors file: length prefix + header text (as given) + data.
std::string raw_file(const std::string& header, const std::string& data) {
  std::string s(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(n >> (8 * i));
  return s + header + data;
}

bool has_temp_leftovers(const fs::path& dir) {
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().find(".tmp-") != std::string::npos) return true;
  return false;
}

void expect_mentions(const Status& st, std::initializer_list<const char*> words) {
  for (const char* w : words)
    EXPECT_NE(st.message().find(w), std::string::npos) << "'" << w << "' not in: " << st.message();
}

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = test::make_temp_dir("compactor-st"); }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

// ---------------------------------------------------------------------------------------------
// Fixture models: every tensor is present with the shape and dtype config.json implies.

std::map<std::string, Shape> expected_shapes(const ModelConfig& c) {
  const int64_t D = c.hidden_size, F = c.intermediate_size, q = c.num_heads * c.head_dim,
                kv = c.num_kv_heads * c.head_dim;
  std::map<std::string, Shape> m{{"model.embed_tokens.weight", {c.vocab_size, D}}, {"model.norm.weight", {D}}};
  if (!c.tie_word_embeddings) m["lm_head.weight"] = {c.vocab_size, D};
  for (int64_t l = 0; l < c.num_layers; ++l) {
    std::string p = "model.layers." + std::to_string(l) + ".";
    m[p + "input_layernorm.weight"] = {D};
    m[p + "post_attention_layernorm.weight"] = {D};
    m[p + "self_attn.q_proj.weight"] = {q, D};
    m[p + "self_attn.k_proj.weight"] = {kv, D};
    m[p + "self_attn.v_proj.weight"] = {kv, D};
    m[p + "self_attn.o_proj.weight"] = {D, q};
    m[p + "mlp.gate_proj.weight"] = {F, D};
    m[p + "mlp.up_proj.weight"] = {F, D};
    m[p + "mlp.down_proj.weight"] = {D, F};
  }
  return m;
}

struct FixtureCase {
  const char* model;
  size_t tensors;
  DType dtype;
};

class FixtureModelTest : public ::testing::TestWithParam<FixtureCase> {};

TEST_P(FixtureModelTest, TensorsMatchConfig) {
  const FixtureCase& fc = GetParam();
  fs::path dir = test::model_dir(fc.model);
  auto cfg = load_model_config(dir);
  ASSERT_TRUE(cfg.is_ok()) << cfg.status().message();
  auto w = WeightFiles::open(dir);
  ASSERT_TRUE(w.is_ok()) << w.status().message();
  auto expected = expected_shapes(*cfg);
  EXPECT_EQ(w->size(), fc.tensors);
  EXPECT_EQ(expected.size(), fc.tensors);
  EXPECT_EQ(w->names().size(), fc.tensors);
  for (const auto& [name, shape] : expected) {
    const TensorEntry* e = w->find(name);
    ASSERT_NE(e, nullptr) << name;
    EXPECT_EQ(e->shape, shape) << name << " " << e->shape.str() << " vs " << shape.str();
    EXPECT_EQ(e->dtype, fc.dtype) << name;
    View v = e->view();
    EXPECT_EQ(v.device, Device::kCpu);
    EXPECT_EQ(static_cast<uint64_t>(v.bytes()), e->bytes());
  }
  ASSERT_EQ(w->files().size(), 1u);
  const SafetensorsFile& f = *w->files()[0];
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_EQ(w->file_of("model.norm.weight"), &f);
  // Every byte of the data section belongs to exactly one tensor in these files.
  EXPECT_EQ(static_cast<uint64_t>(w->total_bytes()), f.file_size() - f.data_start());
  auto totals = w->dtype_totals();
  ASSERT_EQ(totals.size(), 1u);
  EXPECT_EQ(totals.at(fc.dtype).tensors, static_cast<int64_t>(fc.tensors));
  EXPECT_EQ(totals.at(fc.dtype).elements, w->total_elements());
  EXPECT_EQ(w->find("model.layers.999.mlp.up_proj.weight"), nullptr);
}

INSTANTIATE_TEST_SUITE_P(Models, FixtureModelTest,
                         ::testing::Values(FixtureCase{"fixture-llama-sp", 74, DType::kBF16},
                                           FixtureCase{"fixture-llama-bpe", 57, DType::kBF16},
                                           FixtureCase{"stories260K", 47, DType::kF32}),
                         [](const auto& info) {
                           std::string s = info.param.model;
                           for (char& c : s)
                             if (!isalnum(static_cast<unsigned char>(c))) c = '_';
                           return s;
                         });

// The mapped bytes are the file's bytes, read independently.
TEST(SafetensorsFixture, ViewsAreTheFileBytes) {
  fs::path path = test::model_dir("stories260K") / "model.safetensors";
  auto f = SafetensorsFile::open(path);
  ASSERT_TRUE(f.is_ok()) << f.status().message();
  std::string bytes = read_bytes(path);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ((*f)->data_start(), 8 + n);
  for (const TensorEntry& e : (*f)->tensors()) {
    ASSERT_LE(8 + n + e.end, bytes.size());
    EXPECT_EQ(std::memcmp(e.view().data, bytes.data() + 8 + n + e.begin, e.bytes()), 0) << e.name;
  }
  // 1.0 is a typical RMSNorm weight scale; the values must be plausible floats, not garbage.
  const TensorEntry* norm = (*f)->find("model.norm.weight");
  ASSERT_NE(norm, nullptr);
  for (int64_t i = 0; i < norm->shape.numel(); ++i) EXPECT_TRUE(std::isfinite(norm->view().as<float>()[i]));
  // tensor_names() follows the data order.
  auto names = (*f)->tensor_names();
  ASSERT_EQ(names.size(), (*f)->tensors().size());
  for (size_t i = 1; i < names.size(); ++i) EXPECT_LE((*f)->find(names[i - 1])->end, (*f)->find(names[i])->begin);
  (*f)->advise(*norm, MapAdvice::kDontNeed);  // pages drop and fault back in from the file
  EXPECT_TRUE(std::isfinite(norm->view().as<float>()[0]));
}

TEST(SafetensorsFixture, MappingOutlivesWeightFilesCopies) {
  const TensorEntry* e = nullptr;
  std::shared_ptr<SafetensorsFile> keep;
  {
    auto w = WeightFiles::open(test::model_dir("stories260K"));
    ASSERT_TRUE(w.is_ok()) << w.status().message();
    keep = w->files()[0];
    e = w->find("model.embed_tokens.weight");
  }
  ASSERT_NE(e, nullptr);
  EXPECT_TRUE(std::isfinite(e->view().as<float>()[e->shape.numel() - 1]));
}

// ---------------------------------------------------------------------------------------------
// Writer round trips

TEST_F(SafetensorsTest, RoundTripAllDtypesWithMetadata) {
  std::vector<float> f32(6);
  std::iota(f32.begin(), f32.end(), -2.5f);
  std::vector<uint16_t> f16, bf16;
  for (float v : {0.5f, -1.0f, 3.25f}) f16.push_back(f32_to_f16(v));
  for (float v : {1.5f, -7.0f, 0.0f, 65504.0f, 1e-3f}) bf16.push_back(f32_to_bf16(v));
  std::vector<int32_t> i32{7, -1, 2147483647, -2147483647 - 1};
  float scalar = 42.0f;
  std::vector<NamedView> in{
      {"w.f32", View{f32.data(), {2, 3}, DType::kF32}},    {"w.f16", View{f16.data(), {3}, DType::kF16}},
      {"w.bf16", View{bf16.data(), {5, 1}, DType::kBF16}}, {"idx.i32", View{i32.data(), {1, 2, 1, 2}, DType::kI32}},
      {"scalar", View{&scalar, {}, DType::kF32}},          {"empty", View{nullptr, {0, 4}, DType::kF16}},
  };
  std::map<std::string, std::string> meta{{"format", "pt"}, {"compactor.recipe", "w4g128"}, {"unicode", "é ✓"}};
  fs::path path = dir_ / "rt.safetensors";
  Status st = write_safetensors(path, in, meta);
  ASSERT_TRUE(st.is_ok()) << st.message();
  EXPECT_FALSE(has_temp_leftovers(dir_));

  auto f = SafetensorsFile::open(path);
  ASSERT_TRUE(f.is_ok()) << f.status().message();
  EXPECT_EQ((*f)->metadata(), meta);
  EXPECT_EQ((*f)->data_start() % 8, 0u) << "header must be padded to 8 bytes";
  EXPECT_EQ((*f)->tensors().size(), in.size());
  for (const NamedView& t : in) {
    const TensorEntry* e = (*f)->find(t.name);
    ASSERT_NE(e, nullptr) << t.name;
    EXPECT_EQ(e->dtype, t.view.dtype);
    EXPECT_EQ(e->shape, t.view.shape) << t.name;
    EXPECT_EQ(e->begin % dtype_size(e->dtype), 0u) << t.name << " is misaligned";
    ASSERT_EQ(static_cast<int64_t>(e->bytes()), t.view.bytes());
    if (e->bytes() > 0) {
      EXPECT_EQ(std::memcmp(e->view().data, t.view.data, e->bytes()), 0) << t.name;
    }
  }
  EXPECT_EQ((*f)->find("scalar")->shape.ndim, 0);
  EXPECT_EQ((*f)->find("scalar")->view().as<float>()[0], 42.0f);
  // The header is JSON padded with spaces, as the reference writer does.
  std::string bytes = read_bytes(path);
  std::string header = bytes.substr(8, (*f)->data_start() - 8);
  size_t close = header.find_last_of('}');
  ASSERT_NE(close, std::string::npos);
  EXPECT_LT(header.size() - close - 1, 8u);
  EXPECT_EQ(header.find_first_not_of(' ', close + 1), std::string::npos);
  EXPECT_EQ(bytes.size(), (*f)->data_start() + sizeof(float) * 7 + 2 * 3 + 2 * 5 + 4 * 4);
}

TEST_F(SafetensorsTest, WriteIsDeterministicAndOverwrites) {
  std::vector<float> a{1, 2, 3, 4};
  std::vector<float> b{5, 6};
  fs::path p1 = dir_ / "a.safetensors", p2 = dir_ / "b.safetensors";
  ASSERT_TRUE(write_safetensors(p1, {{"x", View{a.data(), {4}}}, {"y", View{b.data(), {2}}}}).is_ok());
  ASSERT_TRUE(write_safetensors(p2, {{"y", View{b.data(), {2}}}, {"x", View{a.data(), {4}}}}).is_ok());
  EXPECT_EQ(read_bytes(p1), read_bytes(p2)) << "input order must not change the bytes";
  ASSERT_TRUE(write_safetensors(p1, {{"z", View{b.data(), {1, 2}}}}).is_ok());
  auto f = SafetensorsFile::open(p1);
  ASSERT_TRUE(f.is_ok());
  EXPECT_EQ((*f)->tensor_names(), std::vector<std::string>{"z"});
  EXPECT_TRUE((*f)->metadata().empty());
}

TEST_F(SafetensorsTest, WriteRejectsBadInputAndLeavesNothing) {
  std::vector<float> a{1, 2};
  View v{a.data(), {2}};
  fs::path path = dir_ / "bad.safetensors";
  Status dup = write_safetensors(path, {{"x", v}, {"x", v}});
  EXPECT_FALSE(dup.is_ok());
  EXPECT_NE(dup.message().find("'x' appears twice"), std::string::npos) << dup.message();
  EXPECT_FALSE(write_safetensors(path, {{"__metadata__", v}}).is_ok());
  EXPECT_FALSE(write_safetensors(path, {{"", v}}).is_ok());
  View cuda = v;
  cuda.device = Device::kCuda;
  Status dev = write_safetensors(path, {{"x", cuda}});
  EXPECT_NE(dev.message().find("expected a CPU view"), std::string::npos) << dev.message();
  EXPECT_FALSE(write_safetensors(path, {{"x", View{nullptr, {2}}}}).is_ok());
  EXPECT_FALSE(fs::exists(path));
  Status nodir = write_safetensors(dir_ / "missing" / "x.safetensors", {{"x", v}});
  EXPECT_EQ(nodir.code(), StatusCode::kIoError);
  EXPECT_NE(nodir.message().find("missing"), std::string::npos) << nodir.message();
  EXPECT_FALSE(has_temp_leftovers(dir_));
}

// ---------------------------------------------------------------------------------------------
// Sharded directories

// Splits stories260K into two shards + index in `out`; returns the index JSON.
json write_two_shards(const WeightFiles& src, const fs::path& out) {
  std::vector<NamedView> a, b;
  json wm = json::object();
  auto names = src.names();
  for (size_t i = 0; i < names.size(); ++i) {
    bool first = i < names.size() / 2;
    (first ? a : b).push_back({names[i], src.find(names[i])->view()});
    wm[names[i]] = first ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
  }
  EXPECT_TRUE(write_safetensors(out / "model-00001-of-00002.safetensors", a, {{"format", "pt"}}).is_ok());
  EXPECT_TRUE(write_safetensors(out / "model-00002-of-00002.safetensors", b, {{"format", "pt"}}).is_ok());
  json index = {{"metadata", {{"total_size", src.total_bytes()}}}, {"weight_map", wm}};
  write_bytes(out / "model.safetensors.index.json", index.dump(2));
  return index;
}

TEST_F(SafetensorsTest, ShardedDirectoryReadsBackIdenticalBytes) {
  auto src = WeightFiles::open(test::model_dir("stories260K"));
  ASSERT_TRUE(src.is_ok()) << src.status().message();
  write_two_shards(*src, dir_);
  auto w = WeightFiles::open(dir_);
  ASSERT_TRUE(w.is_ok()) << w.status().message();
  EXPECT_EQ(w->files().size(), 2u);
  EXPECT_EQ(w->names(), src->names());
  EXPECT_EQ(w->total_bytes(), src->total_bytes());
  EXPECT_EQ(w->dtype_totals().at(DType::kF32).tensors, 47);
  for (const std::string& name : src->names()) {
    const TensorEntry* a = src->find(name);
    const TensorEntry* b = w->find(name);
    ASSERT_NE(b, nullptr) << name;
    EXPECT_EQ(a->shape, b->shape);
    ASSERT_EQ(a->bytes(), b->bytes());
    EXPECT_EQ(std::memcmp(a->data, b->data, a->bytes()), 0) << name;
  }
  EXPECT_EQ(w->file_of(src->names().front())->path().filename(), "model-00001-of-00002.safetensors");
  EXPECT_EQ(w->file_of(src->names().back())->path().filename(), "model-00002-of-00002.safetensors");
}

TEST_F(SafetensorsTest, ShardedDirectoryErrors) {
  auto src = WeightFiles::open(test::model_dir("stories260K"));
  ASSERT_TRUE(src.is_ok());
  json index = write_two_shards(*src, dir_);
  const std::string first = src->names().front();

  // A name listed in the index that its shard lacks.
  json bad = index;
  bad["weight_map"]["model.layers.0.ghost.weight"] = "model-00001-of-00002.safetensors";
  write_bytes(dir_ / "model.safetensors.index.json", bad.dump());
  auto r = WeightFiles::open(dir_);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_NE(r.status().message().find("model.layers.0.ghost.weight"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("model-00001-of-00002"), std::string::npos);

  // A missing shard.
  bad = index;
  bad["weight_map"][first] = "model-00003-of-00002.safetensors";
  write_bytes(dir_ / "model.safetensors.index.json", bad.dump());
  r = WeightFiles::open(dir_);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("model-00003-of-00002.safetensors"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("does not exist"), std::string::npos) << r.status().message();

  // A shard name that escapes the directory.
  bad = index;
  bad["weight_map"][first] = "../model.safetensors";
  write_bytes(dir_ / "model.safetensors.index.json", bad.dump());
  EXPECT_FALSE(WeightFiles::open(dir_).is_ok());

  // No weight_map, then an index that is not JSON.
  write_bytes(dir_ / "model.safetensors.index.json", R"({"metadata": {}})");
  r = WeightFiles::open(dir_);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("weight_map"), std::string::npos) << r.status().message();
  write_bytes(dir_ / "model.safetensors.index.json", "{not json");
  r = WeightFiles::open(dir_);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("model.safetensors.index.json"), std::string::npos) << r.status().message();

  // The same tensor in two shards.
  const std::string last = src->names().back();
  ASSERT_TRUE(write_safetensors(dir_ / "model-00002-of-00002.safetensors",
                                {{first, src->find(first)->view()}, {last, src->find(last)->view()}})
                  .is_ok());
  json wm = json::object();
  wm[first] = "model-00001-of-00002.safetensors";
  wm[last] = "model-00002-of-00002.safetensors";
  bad = index;
  bad["weight_map"] = wm;
  write_bytes(dir_ / "model.safetensors.index.json", bad.dump());
  r = WeightFiles::open(dir_);
  ASSERT_FALSE(r.is_ok());
  expect_mentions(r.status(), {"appears in both", "model-00001-of-00002", "model-00002-of-00002"});
}

TEST_F(SafetensorsTest, DirectoryWithoutWeights) {
  auto r = WeightFiles::open(dir_);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_NE(r.status().message().find("model.safetensors.index.json"), std::string::npos) << r.status().message();
  r = WeightFiles::open(dir_ / "nope");
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("nope"), std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// Corrupt files, each generated in-test

class CorruptTest : public SafetensorsTest {
 protected:
  // Writes `bytes` and returns the error of opening it (fails the test if it opened).
  Status open_error(const std::string& bytes, const char* label) {
    fs::path p = dir_ / (std::string(label) + ".safetensors");
    write_bytes(p, bytes);
    auto r = SafetensorsFile::open(p);
    EXPECT_FALSE(r.is_ok()) << label << " opened but should not have";
    if (r.is_ok()) return Status::ok();
    EXPECT_NE(r.status().message().find(p.string()), std::string::npos) << label << ": " << r.status().message();
    return r.status();
  }
  static std::string entry(const char* dtype, const char* shape, const char* offsets) {
    return fmt::format(R"("dtype":"{}","shape":{},"data_offsets":{})", dtype, shape, offsets);
  }
  static std::string one(const std::string& name, const std::string& body) {
    return "{\"" + name + "\":{" + body + "}}";
  }
};

TEST_F(CorruptTest, Truncations) {
  std::vector<float> a(16, 1.0f), b(8, 2.0f);
  fs::path good = dir_ / "good.safetensors";
  ASSERT_TRUE(write_safetensors(good, {{"a", View{a.data(), {4, 4}}}, {"b", View{b.data(), {8}}}}).is_ok());
  std::string bytes = read_bytes(good);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  for (size_t cut : {size_t{0}, size_t{1}, size_t{7}}) {
    Status st = open_error(bytes.substr(0, cut), "short");
    EXPECT_EQ(st.code(), StatusCode::kCorrupt);
    expect_mentions(st, {"8-byte header length"});
  }
  for (size_t cut : {size_t{8}, size_t{9}, static_cast<size_t>(8 + n / 2), static_cast<size_t>(8 + n - 1)}) {
    Status st = open_error(bytes.substr(0, cut), "cut_header");
    expect_mentions(st, {"runs past the end"});
  }
  // Cut inside the data: the header is intact but offsets point past the end.
  for (size_t cut : {static_cast<size_t>(8 + n), static_cast<size_t>(8 + n + 10), bytes.size() - 1}) {
    Status st = open_error(bytes.substr(0, cut), "cut_data");
    expect_mentions(st, {"run past the data section"});
  }
}

TEST_F(CorruptTest, HeaderLength) {
  std::string huge(8, '\0');
  huge[5] = 1;  // 2^40
  Status st = open_error(huge + "{}", "huge");
  expect_mentions(st, {"absurd"});
  std::string all_ff(8, '\xff');
  expect_mentions(open_error(all_ff + "{}", "ff"), {"absurd"});
  std::string s = raw_file("{}", "");
  s[0] = 3;  // header length 3 > 2 bytes present
  expect_mentions(open_error(s, "past"), {"runs past the end"});
}

TEST_F(CorruptTest, HeaderNotJsonObject) {
  expect_mentions(open_error(raw_file("{\"a\": ", ""), "notjson"), {"not valid JSON"});
  expect_mentions(open_error(raw_file("[1, 2]  ", ""), "array"), {"must be a JSON object"});
  expect_mentions(open_error(raw_file(std::string("{}\0\0", 4), ""), "nul"), {"NUL byte"});
  expect_mentions(open_error(raw_file("{\"a\": 5}", ""), "entry"), {"'a'", "must be an object"});
  expect_mentions(open_error(raw_file(R"({"__metadata__": {"k": 1}})", ""), "meta"), {"__metadata__", "'k'"});
  expect_mentions(open_error(raw_file(R"({"a": {"dtype": "F32", "shape": [1]}})", "abcd"), "noofs"),
                  {"'a'", "data_offsets"});
}

TEST_F(CorruptTest, BadEntries) {
  std::string data(64, '\0');
  struct Case {
    const char* label;
    std::string header;
    std::vector<const char*> words;
    StatusCode code;
  };
  const Case cases[] = {
      {"dtype", one("w", entry("F8_E4M3", "[4]", "[0,4]")), {"'w'", "F8_E4M3", "BF16"}, StatusCode::kUnsupported},
      {"dtype_type", one("w", R"("dtype":7,"shape":[1],"data_offsets":[0,4])"), {"'w'", "dtype"}, StatusCode::kCorrupt},
      {"neg_shape", one("w", entry("F32", "[-1,4]", "[0,16]")), {"'w'", "negative"}, StatusCode::kCorrupt},
      {"float_shape", one("w", entry("F32", "[1.5]", "[0,4]")), {"'w'", "integers"}, StatusCode::kCorrupt},
      {"shape_type", one("w", entry("F32", "\"4\"", "[0,16]")), {"'w'", "shape"}, StatusCode::kCorrupt},
      {"five_dims", one("w", entry("F32", "[1,1,1,1,2]", "[0,8]")), {"'w'", "5 dimensions"}, StatusCode::kUnsupported},
      {"overflow",
       one("w", entry("F32", "[4294967296,4294967296]", "[0,16]")),
       {"'w'", "overflow"},
       StatusCode::kCorrupt},
      {"byte_overflow",
       one("w", entry("F64", "[4611686018427387904]", "[0,16]")),
       {"'w'", "overflow"},
       StatusCode::kCorrupt},
      {"begin_gt_end", one("w", entry("F32", "[1]", "[8,4]")), {"'w'", "begin > end"}, StatusCode::kCorrupt},
      {"past_end",
       one("w", entry("F32", "[32]", "[0,128]")),
       {"'w'", "run past the data section"},
       StatusCode::kCorrupt},
      {"neg_offset", one("w", entry("F32", "[1]", "[-4,0]")), {"'w'", "data_offsets"}, StatusCode::kCorrupt},
      {"three_offsets", one("w", entry("F32", "[1]", "[0,4,8]")), {"'w'", "data_offsets"}, StatusCode::kCorrupt},
      {"size_mismatch", one("w", entry("F32", "[3]", "[0,16]")), {"'w'", "16 bytes", "needs 12"}, StatusCode::kCorrupt},
      {"bf16_mismatch", one("w", entry("BF16", "[2,2]", "[0,16]")), {"'w'", "[2, 2]", "needs 8"}, StatusCode::kCorrupt},
      {"overlap",
       "{\"a\":{" + entry("F32", "[4]", "[0,16]") + "},\"b\":{" + entry("F32", "[4]", "[8,24]") + "}}",
       {"'a'", "'b'", "overlap"},
       StatusCode::kCorrupt},
      {"same_range",
       "{\"a\":{" + entry("F32", "[2]", "[0,8]") + "},\"b\":{" + entry("I32", "[2]", "[0,8]") + "}}",
       {"overlap"},
       StatusCode::kCorrupt},
  };
  for (const Case& c : cases) {
    Status st = open_error(raw_file(c.header, data), c.label);
    EXPECT_EQ(st.code(), c.code) << c.label << ": " << st.message();
    for (const char* w : c.words) EXPECT_NE(st.message().find(w), std::string::npos) << c.label << ": " << st.message();
  }
}

TEST_F(CorruptTest, LegalOddities) {
  // Gaps between tensors, trailing bytes, empty tensors at shared offsets and an empty header are valid.
  std::string data(40, '\x01');
  std::string h = "{\"a\":{" + entry("F32", "[2]", "[0,8]") + "},\"b\":{" + entry("F32", "[2]", "[16,24]") +
                  "},\"e1\":{" + entry("F32", "[0]", "[8,8]") + "},\"e2\":{" + entry("F16", "[0,3]", "[8,8]") + "}}";
  fs::path p = dir_ / "odd.safetensors";
  write_bytes(p, raw_file(h, data));
  auto f = SafetensorsFile::open(p);
  ASSERT_TRUE(f.is_ok()) << f.status().message();
  EXPECT_EQ((*f)->tensors().size(), 4u);
  EXPECT_EQ((*f)->find("e2")->shape, (Shape{0, 3}));
  write_bytes(p, raw_file("{}", ""));
  f = SafetensorsFile::open(p);
  ASSERT_TRUE(f.is_ok()) << f.status().message();
  EXPECT_TRUE((*f)->tensors().empty());
}

TEST_F(CorruptTest, NotARegularFile) {
  auto r = SafetensorsFile::open(dir_);
  ASSERT_FALSE(r.is_ok());
  auto missing = SafetensorsFile::open(dir_ / "missing.safetensors");
  ASSERT_FALSE(missing.is_ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  expect_mentions(missing.status(), {"missing.safetensors", "does not exist"});
}

}  // namespace
}  // namespace compactor
