// SentencePiece tokenizer (Kudo & Richardson 2018) wrapping libsentencepiece: ids are exactly
// SentencePieceProcessor::Encode's (what the reference ids and the fixture models use), and
// decode is SentencePieceProcessor::Decode (round-trips, including leading spaces).
// With parse_special, control and unknown pieces ("<s>", "</s>", "<unk>") written in the text
// match as single ids; the text between them is encoded segment by segment.
// Tests: tests/unit/test_tokenizer_sp.cpp.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace compactor {

class SentencePieceTokenizer final : public Tokenizer {
 public:
  // Loads a serialized SentencePiece model (tokenizer.model); errors name the file.
  static Result<std::unique_ptr<SentencePieceTokenizer>> load(const std::filesystem::path& file);
  ~SentencePieceTokenizer() override;

  std::vector<int32_t> encode(std::string_view text, bool add_bos, bool parse_special = false) const override;
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = true) const override;
  int64_t vocab_size() const override { return vocab_size_; }
  int32_t bos_id() const override { return bos_id_; }
  const std::vector<int32_t>& eos_ids() const override { return eos_ids_; }
  bool add_bos_by_default() const override { return add_bos_; }
  std::string kind() const override { return "sentencepiece"; }
  std::string id_to_piece(int32_t id) const override;

  // Id of `piece`, -1 when the model has no such piece.
  int32_t piece_to_id(std::string_view piece) const;
  // The model's own BOS/EOS ids (-1 when disabled in the model).
  int32_t model_bos_id() const;
  int32_t model_eos_id() const;
  void set_special_tokens(int32_t bos, std::vector<int32_t> eos, bool add_bos);

 private:
  SentencePieceTokenizer();
  void encode_plain(std::string_view text, std::vector<int32_t>* out) const;
  std::string decode_plain(const std::vector<int32_t>& ids) const;

  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  int64_t vocab_size_ = 0;
  std::vector<std::pair<std::string, int32_t>> specials_;  // control/unknown pieces, longest first
  int32_t bos_id_ = -1;
  std::vector<int32_t> eos_ids_;
  bool add_bos_ = false;
};

}  // namespace compactor
