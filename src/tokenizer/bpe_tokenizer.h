// Byte-level BPE from a Hugging Face tokenizer.json (the GPT-2 / Llama-3 / Qwen2 / SmolLM family):
// added tokens are split out first, then each remaining span is normalized, pre-tokenized
// (bpe_pretokenizer.h), mapped to GPT-2's byte-level alphabet and merged by rank
// (Sennrich et al. 2016, "Neural Machine Translation of Rare Words with Subword Units"),
// reproducing the `tokenizers` library's ids. Decoding maps tokens back to bytes.
// File format: https://huggingface.co/docs/tokenizers (model.type "BPE", vocab, merges as
// "a b" strings or ["a", "b"] pairs, added_tokens, normalizer, pre_tokenizer, post_processor, decoder).
// Tests: tests/unit/test_tokenizer_bpe.cpp, tests/unit/test_tokenizer_fuzz.cpp.
#pragma once

#include <filesystem>
#include <memory>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tokenizer/bpe_pretokenizer.h"
#include "tokenizer/tokenizer.h"

namespace compactor {

struct BpeAddedToken {
  std::string content;
  int32_t id = -1;
  bool special = false;
  bool lstrip = false, rstrip = false, single_word = false;
};

struct BpeMerge {
  int32_t rank;    // position in the merges list: lower merges first
  int32_t result;  // id of the merged token
};

// Everything tokenizer.json describes, parsed and validated (bpe_json.cpp).
struct BpeModelData {
  std::unordered_map<std::string, int32_t> vocab;  // byte-level token text -> id
  std::vector<std::string> id_to_token;            // every id (added tokens too); "" for holes
  std::unordered_map<uint64_t, BpeMerge> merges;   // (left id << 32 | right id) -> merge
  std::vector<BpeAddedToken> added;
  Normalizer normalizer;
  PreTokenizer pre_tokenizer;
  bool ignore_merges = false;  // a word that is itself in the vocab is not merged (Llama-3)
  int32_t unk_id = -1;
  int32_t template_bos = -1;  // the special token post_processor's template puts first, or -1
};

// Parses and validates tokenizer.json text; `source` names the file in errors.
Result<BpeModelData> parse_tokenizer_json(std::string_view json_text, const std::string& source);

class BpeTokenizer final : public Tokenizer {
 public:
  static Result<std::unique_ptr<BpeTokenizer>> from_json(std::string_view json_text, const std::string& source);
  static Result<std::unique_ptr<BpeTokenizer>> load(const std::filesystem::path& file);

  std::vector<int32_t> encode(std::string_view text, bool add_bos, bool parse_special = false) const override;
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = true) const override;
  int64_t vocab_size() const override { return static_cast<int64_t>(data_.id_to_token.size()); }
  int32_t bos_id() const override { return bos_id_; }
  const std::vector<int32_t>& eos_ids() const override { return eos_ids_; }
  bool add_bos_by_default() const override { return add_bos_; }
  std::string kind() const override { return "bpe"; }
  std::string id_to_piece(int32_t id) const override;

  // Id of an added token's content or a vocab entry, -1 when neither.
  int32_t token_to_id(std::string_view token) const;
  // The BOS the post_processor template prepends (-1: it adds none).
  int32_t template_bos_id() const { return data_.template_bos; }
  void set_special_tokens(int32_t bos, std::vector<int32_t> eos, bool add_bos);
  bool is_special(int32_t id) const;

 private:
  explicit BpeTokenizer(BpeModelData data);
  struct Span {
    size_t begin, end;
    int32_t added_id;  // -1 for text to tokenize
  };
  std::vector<Span> split_added(std::string_view text, bool parse_special) const;
  void encode_text(std::string_view text, std::vector<int32_t>* out) const;
  void encode_word(std::string_view word, std::vector<int32_t>* out) const;
  void merge_word(std::string_view word, std::vector<int32_t>* out) const;

  BpeModelData data_;
  std::vector<std::string> id_bytes_;      // what each id decodes to
  std::vector<uint8_t> special_;           // per id: a special added token
  std::vector<int32_t> byte_ids_;          // byte -> id of its one-character token (-1: none)
  std::vector<std::vector<int32_t>> added_by_first_byte_;  // indexes into data_.added, longest first
  int32_t bos_id_ = -1;
  std::vector<int32_t> eos_ids_;
  bool add_bos_ = false;

  // Word -> ids cache: real text repeats words, and merging dominates the cost.
  mutable std::shared_mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

}  // namespace compactor
