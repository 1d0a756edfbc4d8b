// SentencePiece tokenizer over libsentencepiece (see sentencepiece_tokenizer.h).
#include "tokenizer/sentencepiece_tokenizer.h"

#include <algorithm>

#include <sentencepiece_processor.h>

namespace compactor {

SentencePieceTokenizer::SentencePieceTokenizer() : sp_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {}
SentencePieceTokenizer::~SentencePieceTokenizer() = default;

Result<std::unique_ptr<SentencePieceTokenizer>> SentencePieceTokenizer::load(const std::filesystem::path& file) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(file, ec)) return not_found("{}: no such file", file.string());
  std::unique_ptr<SentencePieceTokenizer> tok(new SentencePieceTokenizer());
  const auto st = tok->sp_->Load(file.string());
  if (!st.ok()) return corrupt("{}: not a valid SentencePiece model: {}", file.string(), st.ToString());
  tok->vocab_size_ = tok->sp_->GetPieceSize();
  if (tok->vocab_size_ <= 0) return corrupt("{}: the SentencePiece model has no pieces", file.string());
  for (int id = 0; id < tok->vocab_size_; ++id)
    if (tok->sp_->IsControl(id) || tok->sp_->IsUnknown(id)) tok->specials_.emplace_back(tok->sp_->IdToPiece(id), id);
  std::stable_sort(tok->specials_.begin(), tok->specials_.end(),
                   [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
  return tok;
}

int32_t SentencePieceTokenizer::model_bos_id() const {
  const int id = sp_->bos_id();
  return id >= 0 && id < vocab_size_ ? id : -1;
}

int32_t SentencePieceTokenizer::model_eos_id() const {
  const int id = sp_->eos_id();
  return id >= 0 && id < vocab_size_ ? id : -1;
}

void SentencePieceTokenizer::set_special_tokens(int32_t bos, std::vector<int32_t> eos, bool add_bos) {
  bos_id_ = bos;
  eos_ids_ = std::move(eos);
  add_bos_ = add_bos && bos >= 0;
}

std::string SentencePieceTokenizer::id_to_piece(int32_t id) const {
  // libsentencepiece aborts (a protobuf CHECK) on ids outside the model.
  return id >= 0 && id < vocab_size_ ? sp_->IdToPiece(id) : std::string();
}

int32_t SentencePieceTokenizer::piece_to_id(std::string_view piece) const {
  const int id = sp_->PieceToId(piece);
  return id >= 0 && id < vocab_size_ && sp_->IdToPiece(id) == piece ? id : -1;
}

void SentencePieceTokenizer::encode_plain(std::string_view text, std::vector<int32_t>* out) const {
  if (text.empty()) return;
  std::vector<int> ids;
  const auto st = sp_->Encode(text, &ids);
  COMPACTOR_ASSERT(st.ok(), "SentencePiece Encode failed on a loaded model: {}", st.ToString());
  out->insert(out->end(), ids.begin(), ids.end());
}

std::vector<int32_t> SentencePieceTokenizer::encode(std::string_view text, bool add_bos, bool parse_special) const {
  std::vector<int32_t> ids;
  if (add_bos && bos_id_ >= 0) ids.push_back(bos_id_);
  if (!parse_special) {
    encode_plain(text, &ids);
    return ids;
  }
  size_t start = 0, i = 0;
  while (i < text.size()) {
    auto hit = std::find_if(specials_.begin(), specials_.end(),
                            [&](const auto& s) { return text.substr(i).starts_with(s.first); });
    if (hit == specials_.end()) {
      ++i;
      continue;
    }
    encode_plain(text.substr(start, i - start), &ids);
    ids.push_back(hit->second);
    start = i = i + hit->first.size();
  }
  encode_plain(text.substr(start), &ids);
  return ids;
}

std::string SentencePieceTokenizer::decode_plain(const std::vector<int32_t>& ids) const {
  std::vector<int> valid;
  valid.reserve(ids.size());
  for (int32_t id : ids)
    if (id >= 0 && id < vocab_size_) valid.push_back(id);
  std::string text;
  const auto st = sp_->Decode(valid, &text);
  COMPACTOR_ASSERT(st.ok(), "SentencePiece Decode failed on in-range ids: {}", st.ToString());
  return text;
}

// With !skip_special, control pieces are written as their text and the ids between them are
// decoded run by run (as transformers' slow LlamaTokenizer does), so each run follows
// SentencePiece's leading-space rule on its own.
std::string SentencePieceTokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  if (skip_special) return decode_plain(ids);
  std::string text;
  std::vector<int32_t> run;
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size_ || !sp_->IsControl(id)) {
      run.push_back(id);
      continue;
    }
    text += decode_plain(run);
    run.clear();
    text += sp_->IdToPiece(id);
  }
  return text + decode_plain(run);
}

}  // namespace compactor
