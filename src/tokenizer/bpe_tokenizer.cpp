// Byte-level BPE encoding and decoding (see bpe_tokenizer.h; parsing is in bpe_json.cpp).
#include "tokenizer/bpe_tokenizer.h"

#include <algorithm>
#include <mutex>
#include <queue>

#include <utf8proc.h>

#include "io/text_file.h"
#include "tokenizer/utf8.h"

namespace compactor {

namespace {

constexpr size_t kMaxCachedWordBytes = 64;
constexpr size_t kCacheCapacity = 1 << 18;

// Decoded bytes of a byte-level token; tokens with characters outside the alphabet decode to
// their own UTF-8 text, as tokenizers' ByteLevel decoder does.
std::string byte_level_bytes(const std::string& token) {
  std::string out;
  for (size_t i = 0; i < token.size();) {
    size_t bad = 0;
    const size_t n = utf8::valid_char_len(std::string_view(token).substr(i), &bad);
    const int b = n ? utf8::byte_level_byte(utf8::decode_code_point(std::string_view(token).substr(i), n)) : -1;
    if (b < 0) return token;
    out.push_back(static_cast<char>(b));
    i += n;
  }
  return out;
}

// The code point starting at `pos`, or -1 when the bytes there are not valid UTF-8.
int64_t code_point_at(std::string_view s, size_t pos, size_t* len) {
  size_t bad = 0;
  *len = utf8::valid_char_len(s.substr(pos), &bad);
  if (*len == 0) {
    *len = bad;
    return -1;
  }
  return utf8::decode_code_point(s.substr(pos), *len);
}

// Start of the character that ends right before `pos` (steps back over continuation bytes).
size_t previous_char_start(std::string_view s, size_t pos) {
  size_t p = pos - 1;
  while (p > 0 && pos - p < 4 && (static_cast<unsigned char>(s[p]) & 0xC0) == 0x80) --p;
  return p;
}

bool is_space(int64_t cp) {  // Unicode White_Space (regex \s)
  if (cp < 0) return false;
  return (cp >= 9 && cp <= 13) || cp == ' ' || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
         cp == 0x3000;
}

bool is_word_char(int64_t cp) {  // regex \w: letters, marks, numbers, connector punctuation
  if (cp < 0) return false;
  if (cp == 0x200C || cp == 0x200D) return true;
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(cp))) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME: case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_PC:
      return true;
    default:
      return false;
  }
}

bool word_char_before(std::string_view s, size_t pos) {
  if (pos == 0) return false;
  size_t len = 0;
  return is_word_char(code_point_at(s, previous_char_start(s, pos), &len));
}

bool word_char_at(std::string_view s, size_t pos) {
  size_t len = 0;
  return pos < s.size() && is_word_char(code_point_at(s, pos, &len));
}

}  // namespace

BpeTokenizer::BpeTokenizer(BpeModelData data) : data_(std::move(data)) {
  const size_t n = data_.id_to_token.size();
  id_bytes_.resize(n);
  special_.assign(n, 0);
  std::vector<uint8_t> is_added(n, 0);
  for (const auto& a : data_.added) {
    is_added[a.id] = 1;
    special_[a.id] = a.special ? 1 : 0;
  }
  for (size_t id = 0; id < n; ++id)
    id_bytes_[id] = is_added[id] ? data_.id_to_token[id] : byte_level_bytes(data_.id_to_token[id]);
  byte_ids_.assign(256, -1);
  for (int b = 0; b < 256; ++b) {
    auto it = data_.vocab.find(utf8::byte_level_alphabet()[b]);
    if (it != data_.vocab.end()) byte_ids_[b] = it->second;
  }
  added_by_first_byte_.resize(256);
  for (size_t i = 0; i < data_.added.size(); ++i)
    added_by_first_byte_[static_cast<unsigned char>(data_.added[i].content[0])].push_back(static_cast<int32_t>(i));
  for (auto& list : added_by_first_byte_)  // leftmost-longest matching, as tokenizers' Aho-Corasick
    std::stable_sort(list.begin(), list.end(), [&](int32_t a, int32_t b) {
      return data_.added[a].content.size() > data_.added[b].content.size();
    });
}

Result<std::unique_ptr<BpeTokenizer>> BpeTokenizer::from_json(std::string_view json_text, const std::string& source) {
  ASSIGN_OR_RETURN(BpeModelData data, parse_tokenizer_json(json_text, source));
  return std::unique_ptr<BpeTokenizer>(new BpeTokenizer(std::move(data)));
}

Result<std::unique_ptr<BpeTokenizer>> BpeTokenizer::load(const std::filesystem::path& file) {
  ASSIGN_OR_RETURN(std::string text, read_text_file(file));
  return from_json(text, file.string());
}

void BpeTokenizer::set_special_tokens(int32_t bos, std::vector<int32_t> eos, bool add_bos) {
  bos_id_ = bos;
  eos_ids_ = std::move(eos);
  add_bos_ = add_bos && bos >= 0;
}

bool BpeTokenizer::is_special(int32_t id) const { return id >= 0 && id < vocab_size() && special_[id]; }

std::string BpeTokenizer::id_to_piece(int32_t id) const {
  return id >= 0 && id < vocab_size() ? data_.id_to_token[id] : std::string();
}

int32_t BpeTokenizer::token_to_id(std::string_view token) const {
  for (const auto& a : data_.added)
    if (a.content == token) return a.id;
  auto it = data_.vocab.find(std::string(token));
  return it == data_.vocab.end() ? -1 : it->second;
}

// Splits `text` at added tokens (tokenizers' AddedVocabulary::find_matches): leftmost-longest,
// single_word tokens only between non-word characters, lstrip/rstrip absorb adjacent spaces.
std::vector<BpeTokenizer::Span> BpeTokenizer::split_added(std::string_view text, bool parse_special) const {
  std::vector<Span> spans;
  size_t start = 0, i = 0;
  while (i < text.size()) {
    const BpeAddedToken* hit = nullptr;
    for (int32_t idx : added_by_first_byte_[static_cast<unsigned char>(text[i])]) {
      const BpeAddedToken& t = data_.added[idx];
      if ((!t.special || parse_special) && text.substr(i).starts_with(t.content)) {
        hit = &t;
        break;
      }
    }
    if (!hit) {
      ++i;
      continue;
    }
    size_t b = i, e = i + hit->content.size();
    i = e;
    if (hit->single_word && (word_char_before(text, b) || word_char_at(text, e))) continue;
    size_t len = 0;
    while (hit->lstrip && b > start && is_space(code_point_at(text, previous_char_start(text, b), &len)))
      b = previous_char_start(text, b);
    while (hit->rstrip && e < text.size() && is_space(code_point_at(text, e, &len))) e += len;
    if (start < b) spans.push_back({start, b, -1});
    spans.push_back({b, e, hit->id});
    start = i = e;
  }
  if (start < text.size()) spans.push_back({start, text.size(), -1});
  return spans;
}

std::vector<int32_t> BpeTokenizer::encode(std::string_view text, bool add_bos, bool parse_special) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 2);
  if (add_bos && bos_id_ >= 0) ids.push_back(bos_id_);
  for (const Span& s : split_added(text, parse_special)) {
    if (s.added_id >= 0) ids.push_back(s.added_id);
    else encode_text(text.substr(s.begin, s.end - s.begin), &ids);
  }
  return ids;
}

void BpeTokenizer::encode_text(std::string_view text, std::vector<int32_t>* out) const {
  std::vector<std::string> words;
  if (data_.normalizer.is_identity()) {
    data_.pre_tokenizer.split(text, &words);
  } else {
    data_.pre_tokenizer.split(data_.normalizer.apply(text), &words);
  }
  for (const std::string& w : words) encode_word(w, out);
}

void BpeTokenizer::encode_word(std::string_view word, std::vector<int32_t>* out) const {
  const bool cacheable = word.size() <= kMaxCachedWordBytes;
  if (cacheable) {
    std::shared_lock lock(cache_mutex_);
    auto it = cache_.find(std::string(word));
    if (it != cache_.end()) {
      out->insert(out->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t before = out->size();
  merge_word(word, out);
  if (!cacheable) return;
  std::unique_lock lock(cache_mutex_);
  if (cache_.size() < kCacheCapacity) cache_.emplace(std::string(word), std::vector<int32_t>(out->begin() + before, out->end()));
}

// Rank-ordered merging of one word (tokenizers' Word::merge_all): a min-heap of candidate pairs
// keyed by (rank, position); a popped candidate is applied only if its pair is still adjacent.
void BpeTokenizer::merge_word(std::string_view word, std::vector<int32_t>* out) const {
  if (data_.ignore_merges) {
    std::string mapped;
    for (char c : word) mapped += utf8::byte_level_alphabet()[static_cast<unsigned char>(c)];
    auto it = data_.vocab.find(mapped);
    if (it != data_.vocab.end()) {
      out->push_back(it->second);
      return;
    }
  }
  struct Symbol {
    int32_t id, prev, next;
  };
  std::vector<Symbol> syms;
  syms.reserve(word.size());
  for (char c : word) {
    int32_t id = byte_ids_[static_cast<unsigned char>(c)];
    if (id < 0) id = data_.unk_id;
    if (id < 0) continue;  // no token for this byte and no unk: dropped, as tokenizers does
    const auto n = static_cast<int32_t>(syms.size());
    syms.push_back({id, n - 1, n + 1});
  }
  if (syms.empty()) return;
  syms.back().next = -1;

  struct Candidate {
    int32_t rank, pos;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap;
  auto find_merge = [&](int32_t left) -> const BpeMerge* {
    if (left < 0 || syms[left].next < 0) return nullptr;
    const uint64_t key = (static_cast<uint64_t>(syms[left].id) << 32) | static_cast<uint32_t>(syms[syms[left].next].id);
    auto it = data_.merges.find(key);
    return it == data_.merges.end() ? nullptr : &it->second;
  };
  auto push = [&](int32_t left) {
    if (const BpeMerge* m = find_merge(left)) heap.push({m->rank, left});
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(syms.size()); ++i) push(i);
  std::vector<uint8_t> dead(syms.size(), 0);
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    if (dead[c.pos]) continue;
    const BpeMerge* m = find_merge(c.pos);
    if (!m || m->rank != c.rank) continue;  // stale: a neighbour has merged since
    const int32_t right = syms[c.pos].next;
    syms[c.pos].id = m->result;
    syms[c.pos].next = syms[right].next;
    if (syms[right].next >= 0) syms[syms[right].next].prev = c.pos;
    dead[right] = 1;
    push(syms[c.pos].prev);
    push(c.pos);
  }
  for (int32_t i = 0; i >= 0; i = syms[i].next) out->push_back(syms[i].id);
}

std::string BpeTokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  std::string bytes;
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size()) continue;
    if (skip_special && special_[id]) continue;
    bytes += id_bytes_[id];
  }
  return utf8::sanitize(bytes);
}

}  // namespace compactor
