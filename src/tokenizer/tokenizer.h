// Tokenizer interface, streaming detokenizer, and the loader that picks the implementation for a
// Hugging Face model directory:
//   - dir/tokenizer.model present  -> SentencePiece (libsentencepiece), even when tokenizer.json
//     exists too: the models were trained on SentencePiece's ids, and transformers' conversion of
//     tokenizer.model to tokenizer.json differs on leading/repeated spaces (../shared/reference/README.md);
//   - else dir/tokenizer.json      -> byte-level BPE (GPT-2 / Llama-3 / Qwen2 / SmolLM family).
// BOS/EOS ids and the add-BOS default come from tokenizer_config.json (add_bos_token, bos_token,
// eos_token) and config.json (bos_token_id, eos_token_id: int or list), falling back to the
// tokenizer's own knowledge (SentencePiece's ids, tokenizer.json's post_processor template).
// Tests: tests/unit/test_tokenizer_{sp,bpe,fuzz}.cpp (e.g. `build/tests/unit/test_tokenizer_sp`).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace compactor {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Token ids of `text` (prefixed with bos_id() when `add_bos` and the tokenizer has a BOS).
  // Special-token text in the input ("<s>", "<|endoftext|>") is treated as ordinary text unless
  // `parse_special` is set, in which case special/added tokens match as single ids.
  virtual std::vector<int32_t> encode(std::string_view text, bool add_bos, bool parse_special = false) const = 0;
  // Text of `ids`; special tokens are dropped when `skip_special`. Ids outside the vocabulary
  // decode to nothing (model vocabularies may be padded beyond the tokenizer's).
  virtual std::string decode(const std::vector<int32_t>& ids, bool skip_special = true) const = 0;
  virtual int64_t vocab_size() const = 0;
  virtual int32_t bos_id() const = 0;  // -1 when none
  virtual const std::vector<int32_t>& eos_ids() const = 0;
  virtual bool add_bos_by_default() const = 0;  // from tokenizer_config.json / post_processor
  virtual std::string kind() const = 0;         // "sentencepiece" | "bpe"
  virtual std::string id_to_piece(int32_t id) const = 0;  // "" when out of range
};

// Streams text while generating: feed ids one at a time, get the newly completed UTF-8 text.
// The concatenation of every push() and the final flush() equals tokenizer.decode(all ids).
// It decodes a short window of recent ids and emits the difference (the approach of Hugging
// Face text-generation-inference), which keeps SentencePiece's "strip the first piece's
// leading space" rule consistent and holds back characters whose bytes span several tokens.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer, bool skip_special = true)
      : tokenizer_(tokenizer), skip_special_(skip_special) {}
  // New text completed by `id` ("" while a multi-byte character is still incomplete).
  std::string push(int32_t id);
  // Whatever is still held back (an incomplete character decodes to U+FFFD).
  std::string flush();
  // Forget all ids (start a new sequence).
  void reset();

 private:
  std::string decode_range(size_t begin, size_t end) const;

  const Tokenizer& tokenizer_;
  bool skip_special_;
  std::vector<int32_t> ids_;
  size_t prefix_offset_ = 0;  // window start: ids before it are never decoded again
  size_t read_offset_ = 0;    // ids before it have been emitted
};

// Loads the tokenizer of a Hugging Face model directory (rule in the file header).
Result<std::unique_ptr<Tokenizer>> load_tokenizer(const std::filesystem::path& dir);

}  // namespace compactor
