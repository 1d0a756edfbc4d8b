// Normalizer and pre-tokenizer stages of tokenizer.json (see bpe_pretokenizer.h).
#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer/bpe_pretokenizer.h"

#include <cstdlib>
#include <tuple>

#include <pcre2.h>
#include <utf8proc.h>

#include "tokenizer/json_fields.h"
#include "tokenizer/utf8.h"

namespace compactor {

namespace {

// GPT-2's pre-tokenization pattern, as the `tokenizers` ByteLevel pre-tokenizer uses it.
constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
// Nested Sequence stages deeper than this are rejected (real files use one level).
constexpr int kMaxDepth = 8;

pcre2_code* as_code(void* p) { return static_cast<pcre2_code*>(p); }

}  // namespace

Result<std::shared_ptr<const Regex>> Regex::compile(std::string_view pattern, bool literal) {
  // PCRE2_LITERAL refuses PCRE2_UCP, which only matters for character classes anyway.
  const uint32_t options = PCRE2_UTF | PCRE2_MATCH_INVALID_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP);
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), options, &error,
                                   &offset, nullptr);
  if (!code) {
    PCRE2_UCHAR buf[256];
    pcre2_get_error_message(error, buf, sizeof(buf));
    return invalid_argument("regex '{}' does not compile at offset {}: {}", pattern, offset,
                            reinterpret_cast<const char*>(buf));
  }
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter when JIT is unavailable
  return std::shared_ptr<const Regex>(new Regex(code));
}

Regex::~Regex() { pcre2_code_free(as_code(code_)); }

void Regex::find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>* matches) const {
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(as_code(code_), nullptr);
  COMPACTOR_ASSERT(md != nullptr, "out of memory creating PCRE2 match data");
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t offset = 0;
  while (offset <= text.size()) {
    const int rc = pcre2_match(as_code(code_), subject, text.size(), offset, 0, md, nullptr);
    if (rc < 0) break;  // no match, or a resource limit: the rest stays one unmatched span
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    const size_t begin = ov[0], end = ov[1];
    matches->emplace_back(begin, end);
    if (end > begin) {
      offset = end;
    } else {  // empty match: step over one character to make progress
      size_t bad = 0;
      const size_t n = utf8::valid_char_len(text.substr(end), &bad);
      offset = end + (n > 0 ? n : bad);
    }
  }
  pcre2_match_data_free(md);
}

// ---------------------------------------------------------------- normalizer

Status Normalizer::add(const nlohmann::json& j, const std::string& source, int depth) {
  if (j.is_null()) return Status::ok();
  const std::string where = source + ": normalizer";
  if (depth > kMaxDepth) return corrupt("{}: Sequence nested deeper than {}", where, kMaxDepth);
  ASSIGN_OR_RETURN(std::string type, json_fields::get_string(j, "type", where));
  if (type == "Sequence") {
    const nlohmann::json* list = json_fields::find(j, "normalizers");
    if (!list || !list->is_array()) return corrupt("{}: Sequence without a 'normalizers' array", where);
    for (const auto& item : *list) RETURN_IF_ERROR(add(item, source, depth + 1));
    return Status::ok();
  }
  const int stable = UTF8PROC_STABLE;
  if (type == "NFC") forms_.push_back(stable | UTF8PROC_COMPOSE);
  else if (type == "NFD") forms_.push_back(stable | UTF8PROC_DECOMPOSE);
  else if (type == "NFKC") forms_.push_back(stable | UTF8PROC_COMPOSE | UTF8PROC_COMPAT);
  else if (type == "NFKD") forms_.push_back(stable | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT);
  else
    return unsupported("{}: normalizer type '{}' is not supported (supported: null, NFC, NFD, NFKC, NFKD, Sequence)",
                       where, type);
  return Status::ok();
}

Result<Normalizer> Normalizer::from_json(const nlohmann::json& j, const std::string& source) {
  Normalizer n;
  RETURN_IF_ERROR(n.add(j, source, 0));
  return n;
}

std::string Normalizer::apply(std::string_view text) const {
  std::string out(text);
  bool ascii = true;
  for (char c : text) ascii = ascii && static_cast<unsigned char>(c) < 0x80;
  if (ascii) return out;  // every normalization form leaves ASCII unchanged
  for (int form : forms_) {
    utf8proc_uint8_t* dst = nullptr;
    const utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(out.data()),
                                            static_cast<utf8proc_ssize_t>(out.size()), &dst,
                                            static_cast<utf8proc_option_t>(form));
    // Invalid UTF-8 cannot be normalized; it is passed on unchanged to byte-level BPE.
    if (n >= 0) out.assign(reinterpret_cast<const char*>(dst), static_cast<size_t>(n));
    std::free(dst);
  }
  return out;
}

// ---------------------------------------------------------------- pre-tokenizer

namespace {

Result<SplitBehavior> parse_behavior(const std::string& name, const std::string& where) {
  if (name == "Removed") return SplitBehavior::kRemoved;
  if (name == "Isolated") return SplitBehavior::kIsolated;
  if (name == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (name == "Contiguous") return SplitBehavior::kContiguous;
  return corrupt("{}: unknown split behavior '{}'", where, name);
}

struct Segment {
  size_t begin, end;
  bool is_match;
};

// Applies a SplitDelimiterBehavior to the match/gap segments covering a piece, as
// tokenizers' NormalizedString::split does; returns the kept [begin, end) ranges.
std::vector<Segment> apply_behavior(const std::vector<Segment>& segs, SplitBehavior behavior) {
  std::vector<Segment> out;
  bool previous_match = false;
  switch (behavior) {
    case SplitBehavior::kIsolated:
      return segs;
    case SplitBehavior::kRemoved:
      for (const Segment& s : segs)
        if (!s.is_match) out.push_back(s);
      return out;
    case SplitBehavior::kContiguous:
      for (const Segment& s : segs) {
        if (s.is_match == previous_match && !out.empty()) out.back().end = s.end;
        else out.push_back(s);
        previous_match = s.is_match;
      }
      return out;
    case SplitBehavior::kMergedWithPrevious:
      for (const Segment& s : segs) {
        if (s.is_match && !previous_match && !out.empty()) out.back().end = s.end;
        else out.push_back(s);
        previous_match = s.is_match;
      }
      return out;
    case SplitBehavior::kMergedWithNext:
      for (auto it = segs.rbegin(); it != segs.rend(); ++it) {
        if (it->is_match && !previous_match && !out.empty()) out.back().begin = it->begin;
        else out.push_back(*it);
        previous_match = it->is_match;
      }
      return {out.rbegin(), out.rend()};
  }
  return out;
}

}  // namespace

Status PreTokenizer::add(const nlohmann::json& j, const std::string& source, int depth) {
  if (j.is_null()) return Status::ok();
  const std::string where = source + ": pre_tokenizer";
  if (depth > kMaxDepth) return corrupt("{}: Sequence nested deeper than {}", where, kMaxDepth);
  ASSIGN_OR_RETURN(std::string type, json_fields::get_string(j, "type", where));
  Step step;
  if (type == "Sequence") {
    const nlohmann::json* list = json_fields::find(j, "pretokenizers");
    if (!list || !list->is_array()) return corrupt("{}: Sequence without a 'pretokenizers' array", where);
    for (const auto& item : *list) RETURN_IF_ERROR(add(item, source, depth + 1));
    return Status::ok();
  } else if (type == "ByteLevel") {
    ASSIGN_OR_RETURN(step.add_prefix_space, json_fields::get_bool(j, "add_prefix_space", false, where + ".ByteLevel"));
    ASSIGN_OR_RETURN(bool use_regex, json_fields::get_bool(j, "use_regex", true, where + ".ByteLevel"));
    if (use_regex) {
      ASSIGN_OR_RETURN(step.regex, Regex::compile(kGpt2Pattern, false));
    }
    has_byte_level_ = true;
  } else if (type == "Digits") {
    ASSIGN_OR_RETURN(bool individual, json_fields::get_bool(j, "individual_digits", false, where + ".Digits"));
    // tokenizers splits on char::is_numeric, i.e. general categories Nd, Nl, No = \p{N}.
    ASSIGN_OR_RETURN(step.regex, Regex::compile(R"(\p{N})", false));
    step.behavior = individual ? SplitBehavior::kIsolated : SplitBehavior::kContiguous;
  } else if (type == "Split") {
    const nlohmann::json* pattern = json_fields::find(j, "pattern");
    const bool is_regex = pattern && pattern->contains("Regex") && (*pattern)["Regex"].is_string();
    const bool is_string = pattern && pattern->contains("String") && (*pattern)["String"].is_string();
    if (!is_regex && !is_string) return corrupt("{}.Split: 'pattern' must be {{\"Regex\": ...}} or {{\"String\": ...}}", where);
    const std::string text = (*pattern)[is_regex ? "Regex" : "String"].get<std::string>();
    auto regex = Regex::compile(text, !is_regex);
    if (!regex) return regex.status().with_context(where + ".Split");
    step.regex = *regex;
    ASSIGN_OR_RETURN(std::string behavior, json_fields::get_string(j, "behavior", where + ".Split"));
    ASSIGN_OR_RETURN(step.behavior, parse_behavior(behavior, where + ".Split"));
    ASSIGN_OR_RETURN(step.invert, json_fields::get_bool(j, "invert", false, where + ".Split"));
  } else {
    return unsupported("{}: pre-tokenizer type '{}' is not supported (supported: ByteLevel, Digits, Split, Sequence)",
                       where, type);
  }
  steps_.push_back(std::move(step));
  return Status::ok();
}

Result<PreTokenizer> PreTokenizer::from_json(const nlohmann::json& j, const std::string& source) {
  PreTokenizer p;
  RETURN_IF_ERROR(p.add(j, source, 0));
  return p;
}

void PreTokenizer::apply_step(const Step& step, std::string_view piece, std::vector<std::string>* out) const {
  std::string prefixed;
  if (step.add_prefix_space && (piece.empty() || piece[0] != ' ')) {
    prefixed.reserve(piece.size() + 1);
    prefixed.push_back(' ');
    prefixed.append(piece);
    piece = prefixed;
  }
  if (!step.regex) {
    out->emplace_back(piece);
    return;
  }
  std::vector<std::pair<size_t, size_t>> matches;
  step.regex->find_all(piece, &matches);
  std::vector<Segment> segs;
  size_t start = 0;
  for (auto [b, e] : matches) {
    if (start < b) segs.push_back({start, b, step.invert});
    segs.push_back({b, e, !step.invert});
    start = e;
  }
  if (start < piece.size()) segs.push_back({start, piece.size(), step.invert});
  for (const Segment& s : apply_behavior(segs, step.behavior))
    if (s.end > s.begin) out->emplace_back(piece.substr(s.begin, s.end - s.begin));
}

void PreTokenizer::split(std::string_view text, std::vector<std::string>* pieces) const {
  if (text.empty()) return;
  std::vector<std::string> current{std::string(text)}, next;
  for (const Step& step : steps_) {
    next.clear();
    for (const std::string& p : current) apply_step(step, p, &next);
    current.swap(next);
  }
  for (std::string& p : current) pieces->push_back(std::move(p));
}

}  // namespace compactor
