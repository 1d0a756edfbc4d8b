// The text-processing stages of a Hugging Face tokenizer.json that run before BPE merging:
// the normalizer (null, NFC/NFD/NFKC/NFKD via utf8proc, or a Sequence of them) and the
// pre-tokenizer (ByteLevel, Digits, Split with a regex or literal pattern, or a Sequence),
// following the semantics of the `tokenizers` library (pre_tokenizers/*.rs, normalizer.rs's
// SplitDelimiterBehavior). Regexes are PCRE2 with UTF + UCP, so \p{L}, \p{N}, \s and the
// lookahead of GPT-2's pattern behave as Oniguruma does in `tokenizers`; invalid UTF-8 in the
// input never matches and is left to byte-level BPE.
// Tests: tests/unit/test_tokenizer_bpe.cpp, tests/unit/test_tokenizer_fuzz.cpp.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "core/status.h"

namespace compactor {

// A compiled PCRE2 pattern (shared between copies of the pre-tokenizer; matching is const).
class Regex {
 public:
  // `literal`: match `pattern` as plain text (tokenizer.json's {"String": ...} patterns).
  static Result<std::shared_ptr<const Regex>> compile(std::string_view pattern, bool literal);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // [begin, end) byte ranges of the successive non-overlapping matches in `text`.
  void find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>* matches) const;

 private:
  explicit Regex(void* code) : code_(code) {}
  void* code_;  // pcre2_code_8*
};

// Unicode normalization forms applied in order (empty: the null normalizer).
class Normalizer {
 public:
  // `j`: tokenizer.json's "normalizer" value; `source` names the file in errors.
  static Result<Normalizer> from_json(const nlohmann::json& j, const std::string& source);
  std::string apply(std::string_view text) const;
  bool is_identity() const { return forms_.empty(); }

 private:
  Status add(const nlohmann::json& j, const std::string& source, int depth);
  std::vector<int> forms_;  // utf8proc option masks
};

// How a Split step treats the matches of its pattern (tokenizers' SplitDelimiterBehavior).
enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

class PreTokenizer {
 public:
  // `j`: tokenizer.json's "pre_tokenizer" value (null allowed).
  static Result<PreTokenizer> from_json(const nlohmann::json& j, const std::string& source);

  // Splits `text` into the words BPE merges within (raw bytes; the byte-level mapping is the
  // model's job). Pieces are appended to `pieces`.
  void split(std::string_view text, std::vector<std::string>* pieces) const;
  bool has_byte_level() const { return has_byte_level_; }

 private:
  struct Step {
    std::shared_ptr<const Regex> regex;  // null: no splitting
    SplitBehavior behavior = SplitBehavior::kIsolated;
    bool invert = false;
    bool add_prefix_space = false;  // ByteLevel's option
  };
  Status add(const nlohmann::json& j, const std::string& source, int depth);
  void apply_step(const Step& step, std::string_view piece, std::vector<std::string>* out) const;

  std::vector<Step> steps_;
  bool has_byte_level_ = false;
};

}  // namespace compactor
