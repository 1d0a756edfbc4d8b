// Byte-level BPE tokenizer (src/tokenizer/bpe_*.{h,cpp}) against ../shared/reference (ids from
// the Hugging Face tokenizers library on fixture-llama-bpe's tokenizer.json, including the whole
// WikiText-2 test file), the SmolLM2 tokenizer.json (string merges), pre-tokenizer/normalizer
// semantics on small in-test tokenizers, StreamDecoder, and bad tokenizer.json files.
// Run: build-*/tests/test_tokenizer_bpe
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "io/text_file.h"
#include "support/fixtures.h"
#include "support/npy.h"
#include "tokenizer/bpe_pretokenizer.h"
#include "tokenizer/bpe_tokenizer.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace compactor {
namespace {

using nlohmann::json;

struct TokVector {
  std::string text, decoded;
  std::vector<int32_t> ids, ids_with_special;
  std::vector<std::string> tokens;
};

std::vector<TokVector> load_vectors() {
  auto text = read_text_file(test::reference_dir("fixture-llama-bpe") / "tokenizer_vectors.json");
  EXPECT_TRUE(text.is_ok()) << text.status().message();
  std::vector<TokVector> out;
  for (const auto& v : json::parse(*text)) out.push_back({v["text"], v["decoded"], v["ids"], v["ids_with_special"], v["tokens"]});
  EXPECT_EQ(out.size(), 32u);
  return out;
}

std::unique_ptr<Tokenizer> load_ok(const std::filesystem::path& dir) {
  auto tok = load_tokenizer(dir);
  EXPECT_TRUE(tok.is_ok()) << tok.status().message();
  return tok.is_ok() ? std::move(tok).value() : nullptr;
}

std::string streamed(const Tokenizer& tok, const std::vector<int32_t>& ids, bool skip_special = true) {
  StreamDecoder stream(tok, skip_special);
  std::string text;
  for (int32_t id : ids) text += stream.push(id);
  return text + stream.flush();
}

bool has_special_text(const std::string& s) { return s.find("<|endoftext|>") != std::string::npos; }

// The tokenizers library always matches added tokens in the text, so its ids equal ours with
// parse_special; without it, special-token text is ordinary text.
TEST(TokenizerBpe, FixtureMatchesReferenceIds) {
  auto tok = load_ok(test::model_dir("fixture-llama-bpe"));
  ASSERT_TRUE(tok);
  for (const TokVector& v : load_vectors()) {
    EXPECT_EQ(tok->encode(v.text, false, true), v.ids) << "text: " << v.text;
    EXPECT_EQ(tok->encode(v.text, tok->add_bos_by_default(), true), v.ids_with_special) << "text: " << v.text;
    if (!has_special_text(v.text)) EXPECT_EQ(tok->encode(v.text, false), v.ids) << "text: " << v.text;
    ASSERT_EQ(v.tokens.size(), v.ids.size());
    for (size_t i = 0; i < v.ids.size(); ++i) EXPECT_EQ(tok->id_to_piece(v.ids[i]), v.tokens[i]);
  }
}

TEST(TokenizerBpe, SpecialTextIsOrdinaryWithoutParseSpecial) {
  auto tok = load_ok(test::model_dir("fixture-llama-bpe"));
  ASSERT_TRUE(tok);
  const std::string text = "<|endoftext|> literal";
  const std::vector<int32_t> ids = tok->encode(text, false);
  EXPECT_GT(ids.size(), 2u);
  for (int32_t id : ids) EXPECT_NE(id, 0);
  EXPECT_EQ(tok->decode(ids), text);
  EXPECT_EQ(tok->encode(text, false, true), std::vector<int32_t>({0, 19620}));
}

TEST(TokenizerBpe, DecodeMatchesReference) {
  auto tok = load_ok(test::model_dir("fixture-llama-bpe"));
  ASSERT_TRUE(tok);
  for (const TokVector& v : load_vectors()) {
    EXPECT_EQ(v.decoded, v.text);  // the field holds tokenizers' decode(ids, skip_special_tokens=False)
    EXPECT_EQ(tok->decode(v.ids, false), v.decoded);
    if (!has_special_text(v.text)) EXPECT_EQ(tok->decode(v.ids), v.decoded);
  }
  EXPECT_EQ(tok->decode({0, 19620}), " literal");
}

TEST(TokenizerBpe, SmolLm2TokenizerWithStringMergesGivesTheSameIds) {
  auto tok = load_ok(test::shared_dir() / "tokenizers" / "smollm2-bpe");
  ASSERT_TRUE(tok);
  EXPECT_EQ(tok->vocab_size(), 49152);
  for (const TokVector& v : load_vectors()) EXPECT_EQ(tok->encode(v.text, false, true), v.ids) << v.text;
}

TEST(TokenizerBpe, SpecialIdsAndDefaults) {
  auto fixture = load_ok(test::model_dir("fixture-llama-bpe"));
  ASSERT_TRUE(fixture);
  EXPECT_EQ(fixture->kind(), "bpe");
  EXPECT_EQ(fixture->vocab_size(), 49152);
  EXPECT_EQ(fixture->bos_id(), 0);
  EXPECT_EQ(fixture->eos_ids(), std::vector<int32_t>({0}));
  EXPECT_FALSE(fixture->add_bos_by_default());  // its TemplateProcessing adds nothing
  EXPECT_EQ(fixture->encode("Hello world", true), std::vector<int32_t>({0, 19556, 905}));
  // smollm2-bpe has no tokenizer_config.json: ids come from its config.json.
  auto smol = load_ok(test::shared_dir() / "tokenizers" / "smollm2-bpe");
  ASSERT_TRUE(smol);
  EXPECT_EQ(smol->bos_id(), 1);
  EXPECT_EQ(smol->eos_ids(), std::vector<int32_t>({2}));
  EXPECT_FALSE(smol->add_bos_by_default());
}

TEST(TokenizerBpe, PromptIdsAndGreedyTextMatchReference) {
  auto tok = load_ok(test::model_dir("fixture-llama-bpe"));
  ASSERT_TRUE(tok);
  auto text = read_text_file(test::reference_dir("fixture-llama-bpe") / "prompts_logits.json");
  ASSERT_TRUE(text.is_ok());
  for (const auto& p : json::parse(*text)) {
    EXPECT_EQ(tok->encode(p["prompt"].get<std::string>(), true), p["input_ids"].get<std::vector<int32_t>>());
    const auto greedy = p["greedy_32_ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(tok->decode(greedy), p["greedy_32_text"].get<std::string>());
  }
}

TEST(TokenizerBpe, WikiText2IdsMatchReferenceExactly) {
  auto tok = load_ok(test::model_dir("fixture-llama-bpe"));
  ASSERT_TRUE(tok);
  auto text = read_text_file(test::shared_dir() / "data" / "wikitext2" / "wiki.test.raw");
  ASSERT_TRUE(text.is_ok()) << text.status().message();
  auto ref = test::read_npy_int32(test::reference_dir("fixture-llama-bpe") / "wikitext2_test_ids.npy");
  ASSERT_TRUE(ref.is_ok()) << ref.status().message();
  ASSERT_EQ(ref->shape, std::vector<int64_t>({303415}));
  const std::vector<int32_t> ids = tok->encode(*text, false);
  ASSERT_EQ(ids.size(), ref->data.size());
  size_t first_diff = ids.size();
  for (size_t i = 0; i < ids.size() && first_diff == ids.size(); ++i)
    if (ids[i] != ref->data[i]) first_diff = i;
  EXPECT_EQ(first_diff, ids.size()) << "first differing token at " << first_diff;
  EXPECT_EQ(tok->decode(ids), *text);
}

TEST(TokenizerBpe, StreamDecoderEqualsDecode) {
  auto tok = load_ok(test::model_dir("fixture-llama-bpe"));
  ASSERT_TRUE(tok);
  for (const TokVector& v : load_vectors()) {
    EXPECT_EQ(streamed(*tok, v.ids), tok->decode(v.ids)) << v.text;
    EXPECT_EQ(streamed(*tok, v.ids, false), tok->decode(v.ids, false)) << v.text;
  }
  // "🎉" is split over three tokens: the first two emit nothing.
  StreamDecoder stream(*tok);
  EXPECT_EQ(stream.push(10813), "");
  EXPECT_EQ(stream.push(232), "");
  EXPECT_EQ(stream.push(227), "🎉");
  EXPECT_EQ(stream.flush(), "");
}

TEST(TokenizerBpe, OutOfRangeIdsDecodeToNothing) {
  auto tok = load_ok(test::model_dir("fixture-llama-bpe"));
  ASSERT_TRUE(tok);
  EXPECT_EQ(tok->decode({-1, 19556, 49152, 905, 1 << 30}), "Hello world");
  EXPECT_EQ(tok->id_to_piece(49152), "");
}

TEST(TokenizerBpe, InvalidUtf8InputIsEncodedByteByByte) {
  auto tok = load_ok(test::model_dir("fixture-llama-bpe"));
  ASSERT_TRUE(tok);
  const std::string text = "ab\x80 c\xe2\x82";
  const std::vector<int32_t> ids = tok->encode(text, false);
  EXPECT_FALSE(ids.empty());
  EXPECT_EQ(tok->decode(ids), utf8::sanitize(text));
  EXPECT_EQ(tok->decode(ids), "ab\xEF\xBF\xBD c\xEF\xBF\xBD");
  // SmolLM2's vocab has no token for byte 0xFF (never in UTF-8); like tokenizers, it is dropped.
  EXPECT_EQ(tok->decode(tok->encode("x\xffy", false)), "xy");
}

// ---------------------------------------------------------------- pre-tokenizer / normalizer units

std::vector<std::string> pre_split(const json& j, const std::string& text) {
  auto pre = PreTokenizer::from_json(j, "test.json");
  EXPECT_TRUE(pre.is_ok()) << pre.status().message();
  std::vector<std::string> out;
  if (pre.is_ok()) pre->split(text, &out);
  return out;
}

using Pieces = std::vector<std::string>;

TEST(TokenizerBpePreTokenizer, SplitBehaviors) {
  auto split = [](const char* behavior, bool invert = false) {
    return pre_split({{"type", "Split"}, {"pattern", {{"String", "-"}}}, {"behavior", behavior}, {"invert", invert}},
                     "the-final--countdown");
  };
  EXPECT_EQ(split("Removed"), Pieces({"the", "final", "countdown"}));
  EXPECT_EQ(split("Isolated"), Pieces({"the", "-", "final", "-", "-", "countdown"}));
  EXPECT_EQ(split("MergedWithPrevious"), Pieces({"the-", "final-", "-", "countdown"}));
  EXPECT_EQ(split("MergedWithNext"), Pieces({"the", "-final", "-", "-countdown"}));
  EXPECT_EQ(split("Contiguous"), Pieces({"the", "-", "final", "--", "countdown"}));
  EXPECT_EQ(split("Removed", true), Pieces({"-", "-", "-"}));
}

TEST(TokenizerBpePreTokenizer, ByteLevelDigitsAndSequence) {
  const json byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
  EXPECT_EQ(pre_split(byte_level, "Hello world's  test 42!!\n"),
            Pieces({"Hello", " world", "'s", " ", " test", " 42", "!!", "\n"}));
  json prefix = byte_level;
  prefix["add_prefix_space"] = true;
  EXPECT_EQ(pre_split(prefix, "Hi there"), Pieces({" Hi", " there"}));
  EXPECT_EQ(pre_split({{"type", "Digits"}, {"individual_digits", false}}, "ab12c٣4"), Pieces({"ab", "12", "c", "٣4"}));
  EXPECT_EQ(pre_split({{"type", "Digits"}, {"individual_digits", true}}, "x12"), Pieces({"x", "1", "2"}));
  const json seq = {{"type", "Sequence"},
                    {"pretokenizers", {{{"type", "Digits"}, {"individual_digits", true}}, byte_level}}};
  EXPECT_EQ(pre_split(seq, "in 2024"), Pieces({"in", " ", "2", "0", "2", "4"}));
  // Llama-3's pattern with a Split step, then ByteLevel without its own regex.
  const std::string llama3 =
      R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  const json l3 = {{"type", "Sequence"},
                   {"pretokenizers",
                    {{{"type", "Split"}, {"pattern", {{"Regex", llama3}}}, {"behavior", "Isolated"}, {"invert", false}},
                     {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}};
  EXPECT_EQ(pre_split(l3, "I'M 12345 ok\n\n"), Pieces({"I", "'M", " ", "123", "45", " ok", "\n\n"}));
}

TEST(TokenizerBpePreTokenizer, UnknownTypesAreRejectedNamingTheFile) {
  auto pre = PreTokenizer::from_json({{"type", "Metaspace"}}, "dir/tokenizer.json");
  ASSERT_FALSE(pre.is_ok());
  EXPECT_NE(pre.status().message().find("dir/tokenizer.json"), std::string::npos);
  EXPECT_NE(pre.status().message().find("Metaspace"), std::string::npos);
  auto bad_regex = PreTokenizer::from_json(
      {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}}, "t.json");
  ASSERT_FALSE(bad_regex.is_ok());
  EXPECT_NE(bad_regex.status().message().find("(unclosed"), std::string::npos);
}

TEST(TokenizerBpeNormalizer, UnicodeFormsAndRejection) {
  auto nfc = Normalizer::from_json({{"type", "NFC"}}, "t.json");
  ASSERT_TRUE(nfc.is_ok());
  EXPECT_EQ(nfc->apply("cafe\xCC\x81"), "caf\xC3\xA9");
  EXPECT_EQ(nfc->apply("plain ascii"), "plain ascii");
  EXPECT_EQ(nfc->apply("bad \xff utf8"), "bad \xff utf8");
  auto nfkc = Normalizer::from_json({{"type", "Sequence"}, {"normalizers", {{{"type", "NFKC"}}}}}, "t.json");
  ASSERT_TRUE(nfkc.is_ok());
  EXPECT_EQ(nfkc->apply("\xEF\xAC\x81"), "fi");  // U+FB01 ligature
  EXPECT_TRUE(Normalizer::from_json(json(), "t.json")->is_identity());
  auto bad = Normalizer::from_json({{"type", "Lowercase"}}, "my/tokenizer.json");
  ASSERT_FALSE(bad.is_ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kUnsupported);
  EXPECT_NE(bad.status().message().find("my/tokenizer.json"), std::string::npos);
  EXPECT_NE(bad.status().message().find("Lowercase"), std::string::npos);
}

// ---------------------------------------------------------------- small synthetic tokenizers

// A byte-level tokenizer.json: the 256 byte tokens (ids 0..255), then `merges` in order.
json tiny_tokenizer(const std::vector<std::pair<std::string, std::string>>& merges) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[utf8::byte_level_alphabet()[b]] = b;
  json merge_list = json::array();
  for (const auto& [a, b] : merges) {
    if (!vocab.contains(a + b)) vocab[a + b] = static_cast<int>(vocab.size());
    merge_list.push_back(json::array({a, b}));
  }
  return {{"version", "1.0"},
          {"added_tokens", json::array()},
          {"normalizer", nullptr},
          {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
          {"post_processor", nullptr},
          {"decoder", {{"type", "ByteLevel"}}},
          {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merge_list}}}};
}

std::unique_ptr<BpeTokenizer> from_json_ok(const json& j) {
  auto tok = BpeTokenizer::from_json(j.dump(), "tiny.json");
  EXPECT_TRUE(tok.is_ok()) << tok.status().message();
  return tok.is_ok() ? std::move(tok).value() : nullptr;
}

TEST(TokenizerBpeTiny, MergesApplyByRankLeftmostFirst) {
  auto tok = from_json_ok(tiny_tokenizer({{"a", "a"}, {"b", "c"}, {"a", "bc"}}));
  ASSERT_TRUE(tok);
  const int32_t aa = tok->token_to_id("aa"), abc = tok->token_to_id("abc"), a = 'a';
  EXPECT_EQ(tok->encode("aaa", false), std::vector<int32_t>({aa, a}));
  EXPECT_EQ(tok->encode("aabc", false), std::vector<int32_t>({aa, tok->token_to_id("bc")}));  // rank 0 first
  EXPECT_EQ(tok->encode("abc", false), std::vector<int32_t>({abc}));
  EXPECT_EQ(tok->decode(tok->encode("aaa abc", false)), "aaa abc");
}

TEST(TokenizerBpeTiny, IgnoreMergesTakesWholeWordsFromTheVocab) {
  json j = tiny_tokenizer({{"a", "b"}});
  j["model"]["vocab"]["abc"] = 300;
  EXPECT_EQ(from_json_ok(j)->encode("abc", false), std::vector<int32_t>({256, 'c'}));
  j["model"]["ignore_merges"] = true;
  EXPECT_EQ(from_json_ok(j)->encode("abc", false), std::vector<int32_t>({300}));
}

TEST(TokenizerBpeTiny, AddedTokensStripAndSingleWord) {
  json j = tiny_tokenizer({});
  j["added_tokens"] = json::array({
      {{"id", 300}, {"content", "<mask>"}, {"special", true}, {"lstrip", true}, {"rstrip", false}},
      {{"id", 301}, {"content", "<sep>"}, {"special", true}, {"rstrip", true}},
      {{"id", 302}, {"content", "cat"}, {"special", false}, {"single_word", true}},
  });
  auto tok = from_json_ok(j);
  ASSERT_TRUE(tok);
  EXPECT_EQ(tok->encode("x  <mask>", false, true), std::vector<int32_t>({'x', 300}));
  EXPECT_EQ(tok->encode("<sep>  y", false, true), std::vector<int32_t>({301, 'y'}));
  EXPECT_EQ(tok->encode("cat", false), std::vector<int32_t>({302}));  // non-special: always matched
  EXPECT_EQ(tok->encode("cats", false), std::vector<int32_t>({'c', 'a', 't', 's'}));
  EXPECT_EQ(tok->encode("<sep>", false), std::vector<int32_t>({'<', 's', 'e', 'p', '>'}));
  EXPECT_EQ(tok->decode({301, 'y', 302}), "ycat");
  EXPECT_EQ(tok->decode({301, 'y', 302}, false), "<sep>ycat");
}

TEST(TokenizerBpeTiny, TemplateProcessingDecidesAddBos) {
  json j = tiny_tokenizer({});
  j["added_tokens"] = json::array({{{"id", 300}, {"content", "<bos>"}, {"special", true}}});
  j["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single", json::array({{{"SpecialToken", {{"id", "<bos>"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}}}}})},
      {"special_tokens", {{"<bos>", {{"id", "<bos>"}, {"ids", {300}}, {"tokens", {"<bos>"}}}}}}};
  const auto dir = test::make_temp_dir("tok-bpe-template");
  std::ofstream(dir / "tokenizer.json") << j.dump();
  auto tok = load_ok(dir);
  ASSERT_TRUE(tok);
  EXPECT_EQ(tok->bos_id(), 300);
  EXPECT_TRUE(tok->add_bos_by_default());
  EXPECT_EQ(tok->encode("a", true), std::vector<int32_t>({300, 'a'}));
  std::ofstream(dir / "tokenizer_config.json") << R"({"add_bos_token": false, "eos_token": {"content": "<bos>"}})";
  tok = load_ok(dir);
  ASSERT_TRUE(tok);
  EXPECT_FALSE(tok->add_bos_by_default());
  EXPECT_EQ(tok->eos_ids(), std::vector<int32_t>({300}));
  std::filesystem::remove_all(dir);
}

// ---------------------------------------------------------------- bad tokenizer.json

void expect_error(const json& j, const std::string& needle) {
  auto tok = BpeTokenizer::from_json(j.dump(), "bad/tokenizer.json");
  ASSERT_FALSE(tok.is_ok()) << "expected an error mentioning " << needle;
  EXPECT_NE(tok.status().message().find("bad/tokenizer.json"), std::string::npos) << tok.status().message();
  EXPECT_NE(tok.status().message().find(needle), std::string::npos) << tok.status().message();
}

TEST(TokenizerBpeBadInput, StructuralErrorsNameTheFileAndField) {
  const json good = tiny_tokenizer({{"a", "b"}});
  json j = good;
  j.erase("model");
  expect_error(j, "model");
  j = good;
  j["model"].erase("vocab");
  expect_error(j, "vocab");
  j = good;
  j["model"].erase("merges");
  expect_error(j, "merges");
  j = good;
  j["model"]["type"] = "WordPiece";
  expect_error(j, "WordPiece");
  j = good;
  j["model"]["merges"].push_back({"a", "zzz"});
  expect_error(j, "'zzz' is not in the vocab");
  j = good;
  j["model"]["merges"].push_back("a c");
  expect_error(j, "'ac' is not in the vocab");
  j = good;
  j["model"]["merges"].push_back("a b c");
  expect_error(j, "two tokens");
  j = good;
  j["model"]["vocab"]["x"] = -3;
  expect_error(j, "out of range");
  j = good;
  j["model"]["vocab"]["big"] = 2000000000;
  expect_error(j, "out of range");
  j = good;
  j["model"]["vocab"]["dup"] = 5;
  expect_error(j, "id 5 is given to both");
  j = good;
  j["model"]["byte_fallback"] = true;
  expect_error(j, "byte_fallback");
  j = good;
  j["pre_tokenizer"] = {{"type", "Whitespace"}};
  expect_error(j, "Whitespace");
  j = good;
  j["pre_tokenizer"] = nullptr;
  expect_error(j, "ByteLevel");
  j = good;
  j["added_tokens"] = json::array({{{"content", "<x>"}}});
  expect_error(j, "'id' is missing");
  j = good;
  j["post_processor"] = {{"type", "RobertaProcessing"}};
  expect_error(j, "RobertaProcessing");
  expect_error(json::array({1, 2}), "top level");
}

TEST(TokenizerBpeBadInput, NotJsonAndTruncatedFiles) {
  auto not_json = BpeTokenizer::from_json("this is { not json", "bad/tokenizer.json");
  ASSERT_FALSE(not_json.is_ok());
  EXPECT_NE(not_json.status().message().find("bad/tokenizer.json: not valid JSON"), std::string::npos);
  auto real = read_text_file(test::model_dir("fixture-llama-bpe") / "tokenizer.json");
  ASSERT_TRUE(real.is_ok());
  const auto dir = test::make_temp_dir("tok-bpe-trunc");
  for (size_t keep : {size_t{1}, size_t{100}, real->size() / 2, real->size() - 2}) {
    std::ofstream(dir / "tokenizer.json", std::ios::binary) << real->substr(0, keep);
    auto tok = load_tokenizer(dir);
    ASSERT_FALSE(tok.is_ok()) << keep;
    EXPECT_NE(tok.status().message().find("tokenizer.json"), std::string::npos) << tok.status().message();
  }
  std::ofstream(dir / "tokenizer.json", std::ios::binary).flush();  // empty file
  auto empty = load_tokenizer(dir);
  ASSERT_FALSE(empty.is_ok());
  EXPECT_NE(empty.status().message().find("tokenizer.json"), std::string::npos) << empty.status().message();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace compactor
