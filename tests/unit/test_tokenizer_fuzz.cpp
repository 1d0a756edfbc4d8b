// Bounded randomized corruption of tokenizer inputs (fixed seeds, fixed iteration counts):
// a reduced tokenizer.json built in-test from fixture-llama-bpe's (~250 byte/special tokens,
// ~100 merges), stories260K's tokenizer.model, and tokenizer_config.json/config.json. Every
// mutant must give either a Status error naming the file or a tokenizer whose ids stay in range
// and whose decode/stream decode do not crash. Run: build-*/tests/test_tokenizer_fuzz
#include <cstdio>
#include <fstream>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "io/text_file.h"
#include "support/fixtures.h"
#include "tokenizer/bpe_tokenizer.h"
#include "tokenizer/sentencepiece_tokenizer.h"
#include "tokenizer/tokenizer.h"

namespace compactor {
namespace {

using nlohmann::json;

constexpr int kMaxKeptId = 360;     // byte tokens end near id 250; the rest are merge results
constexpr size_t kMaxMerges = 100;

// fixture-llama-bpe's tokenizer.json with only the vocab ids < kMaxKeptId and the first
// kMaxMerges merges among them: the same structure, a few KB instead of 3.5 MB.
std::string reduced_tokenizer_json() {
  auto text = read_text_file(test::model_dir("fixture-llama-bpe") / "tokenizer.json");
  EXPECT_TRUE(text.is_ok()) << text.status().message();
  json doc = json::parse(*text);
  json vocab = json::object();
  for (auto it = doc["model"]["vocab"].begin(); it != doc["model"]["vocab"].end(); ++it)
    if (it.value().get<int>() < kMaxKeptId) vocab[it.key()] = it.value();
  json merges = json::array();
  for (const auto& m : doc["model"]["merges"]) {
    const std::string a = m[0], b = m[1];
    if (vocab.contains(a) && vocab.contains(b) && vocab.contains(a + b)) merges.push_back(m);
    if (merges.size() == kMaxMerges) break;
  }
  EXPECT_EQ(merges.size(), kMaxMerges);
  doc["model"]["vocab"] = vocab;
  doc["model"]["merges"] = merges;
  return doc.dump(1);
}

// One to three random edits: byte flips, truncation, deleted or duplicated ranges, inserted
// JSON punctuation.
std::string mutate(std::string s, std::mt19937& rng) {
  static const std::string kJsonChars = "{}[]\":,-.0123456789eE \\ntrufalsn";
  const int edits = 1 + static_cast<int>(rng() % 3);
  for (int e = 0; e < edits && !s.empty(); ++e) {
    const size_t pos = rng() % s.size();
    const size_t len = 1 + rng() % 16;
    switch (rng() % 5) {
      case 0: s[pos] = static_cast<char>(s[pos] ^ (1 + rng() % 255)); break;
      case 1: s.resize(pos); break;
      case 2: s.erase(pos, len); break;
      case 3: s.insert(pos, 1, kJsonChars[rng() % kJsonChars.size()]); break;
      default: s.insert(pos, s.substr(pos, len)); break;
    }
  }
  return s;
}

const std::vector<std::string>& sample_texts() {
  static const std::vector<std::string> texts = {
      "Hello world", "  two leading spaces", "line1\n\nline3\n", "café naïve 😀🎉", "3.14159 + 2.71828",
      "<|endoftext|> literal <|im_start|>user", "def f(x):\n    return x**2", std::string("nul\0byte", 8),
      "bad \xff\xfe utf8 \xe2\x82"};
  return texts;
}

// A tokenizer that loaded must behave: ids in range, decode and streaming never crash.
void exercise(const Tokenizer& tok) {
  for (const std::string& text : sample_texts()) {
    for (bool special : {false, true}) {
      const std::vector<int32_t> ids = tok.encode(text, true, special);
      for (int32_t id : ids) ASSERT_TRUE(id >= 0 && id < tok.vocab_size()) << "id " << id << " for " << text;
      const std::string decoded = tok.decode(ids, !special);
      StreamDecoder stream(tok);
      std::string streamed;
      for (int32_t id : ids) streamed += stream.push(id);
      streamed += stream.flush();
      EXPECT_EQ(streamed, tok.decode(ids)) << text;
      (void)decoded;
    }
  }
  std::vector<int32_t> wild = {-1, 0, 1, static_cast<int32_t>(tok.vocab_size()), 1 << 30};
  (void)tok.decode(wild);
  for (int32_t id : wild) (void)tok.id_to_piece(id);
}

TEST(TokenizerFuzz, ReducedTokenizerJsonLoads) {
  auto tok = BpeTokenizer::from_json(reduced_tokenizer_json(), "reduced/tokenizer.json");
  ASSERT_TRUE(tok.is_ok()) << tok.status().message();
  EXPECT_EQ((*tok)->vocab_size(), kMaxKeptId);
  exercise(**tok);
  EXPECT_EQ((*tok)->decode((*tok)->encode("the cat", false)), "the cat");
}

TEST(TokenizerFuzz, CorruptedTokenizerJsonGivesErrorOrUsableTokenizer) {
  const std::string base = reduced_tokenizer_json();
  std::mt19937 rng(20240611);
  int loaded = 0, rejected = 0;
  for (int iter = 0; iter < 300; ++iter) {
    const std::string mutant = mutate(base, rng);
    auto tok = BpeTokenizer::from_json(mutant, "fuzz/tokenizer.json");
    if (!tok.is_ok()) {
      ++rejected;
      EXPECT_NE(tok.status().message().find("fuzz/tokenizer.json"), std::string::npos)
          << "iteration " << iter << ": " << tok.status().message();
      continue;
    }
    ++loaded;
    SCOPED_TRACE("iteration " + std::to_string(iter));
    exercise(**tok);
  }
  std::printf("tokenizer.json mutants: %d loaded, %d rejected\n", loaded, rejected);
  EXPECT_GT(loaded, 10);
  EXPECT_GT(rejected, 100);
}

void collect_pointers(const json& j, const json::json_pointer& at, std::vector<json::json_pointer>* out) {
  out->push_back(at);
  if (j.is_object())
    for (auto it = j.begin(); it != j.end(); ++it) collect_pointers(it.value(), at / it.key(), out);
  if (j.is_array())
    for (size_t i = 0; i < j.size(); ++i) collect_pointers(j[i], at / i, out);
}

// Valid JSON with wrong content: a random node replaced by a value of another type or range.
TEST(TokenizerFuzz, WellFormedJsonWithWrongValuesGivesErrorOrUsableTokenizer) {
  const json base = json::parse(reduced_tokenizer_json());
  std::vector<json::json_pointer> pointers, structure;
  collect_pointers(base, json::json_pointer(), &pointers);
  for (const auto& p : pointers) {  // everything but the (many) vocab and merges entries
    const std::string s = p.to_string();
    if (!s.starts_with("/model/vocab/") && !s.starts_with("/model/merges/")) structure.push_back(p);
  }
  const std::vector<json> replacements = {nullptr, -1, 0, 7, 4000000000LL, 1e300, "", "Ġ", "BPE", "Split",
                                          json::array(), json::array({"a", "b"}), json::object(), true};
  std::mt19937 rng(5);
  int loaded = 0;
  for (int iter = 0; iter < 200; ++iter) {
    json doc = base;
    const int edits = 1 + static_cast<int>(rng() % 2);
    for (int e = 0; e < edits; ++e) {
      const auto& from = rng() % 2 ? structure : pointers;
      const json::json_pointer& p = from[rng() % from.size()];
      if (p.empty() || !doc.contains(p)) continue;
      doc[p] = replacements[rng() % replacements.size()];
    }
    auto tok = BpeTokenizer::from_json(doc.dump(), "fuzz/tokenizer.json");
    if (!tok.is_ok()) {
      EXPECT_NE(tok.status().message().find("fuzz/tokenizer.json"), std::string::npos) << tok.status().message();
      continue;
    }
    ++loaded;
    SCOPED_TRACE("iteration " + std::to_string(iter));
    exercise(**tok);
  }
  std::printf("well-formed mutants: %d of 200 loaded\n", loaded);
  EXPECT_GE(loaded, 10);  // the strict reader rejects most; enough must load to exercise encode
}

class TokenizerFuzzFiles : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = test::make_temp_dir("tok-fuzz"); }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  void write(const std::string& name, const std::string& bytes) {
    std::ofstream(dir_ / name, std::ios::binary | std::ios::trunc) << bytes;
  }
  std::filesystem::path dir_;
};

TEST_F(TokenizerFuzzFiles, CorruptedSentencePieceModelGivesErrorOrUsableTokenizer) {
  auto model = read_text_file(test::model_dir("stories260K") / "tokenizer.model");
  ASSERT_TRUE(model.is_ok());
  std::mt19937 rng(7);
  int rejected = 0;
  for (int iter = 0; iter < 100; ++iter) {
    write("tokenizer.model", mutate(*model, rng));
    auto tok = load_tokenizer(dir_);
    if (!tok.is_ok()) {
      ++rejected;
      EXPECT_NE(tok.status().message().find("tokenizer.model"), std::string::npos) << tok.status().message();
      continue;
    }
    SCOPED_TRACE("iteration " + std::to_string(iter));
    exercise(**tok);
  }
  std::printf("tokenizer.model mutants: %d rejected of 100\n", rejected);
  EXPECT_GT(rejected, 10);
}

TEST_F(TokenizerFuzzFiles, CorruptedConfigFilesGiveErrorOrUsableTokenizer) {
  write("tokenizer.json", reduced_tokenizer_json());
  const std::string tokenizer_config = R"({"add_bos_token": true, "bos_token": "<|endoftext|>",
      "eos_token": {"content": "<|im_end|>", "special": true}})";
  const std::string config = R"({"bos_token_id": 0, "eos_token_id": [0, 2], "vocab_size": 360})";
  std::mt19937 rng(99);
  int rejected = 0;
  for (int iter = 0; iter < 100; ++iter) {
    const bool which = iter % 2 == 0;
    write("tokenizer_config.json", which ? mutate(tokenizer_config, rng) : tokenizer_config);
    write("config.json", which ? config : mutate(config, rng));
    auto tok = load_tokenizer(dir_);
    if (!tok.is_ok()) {
      ++rejected;
      const std::string& msg = tok.status().message();
      EXPECT_TRUE(msg.find("config.json") != std::string::npos) << msg;  // either file's name ends so
      continue;
    }
    EXPECT_GE((*tok)->bos_id(), 0);
    for (int32_t id : (*tok)->eos_ids()) EXPECT_TRUE(id >= 0 && id < (*tok)->vocab_size());
  }
  EXPECT_GT(rejected, 10);
}

}  // namespace
}  // namespace compactor
