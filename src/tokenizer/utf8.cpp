// UTF-8 validation/replacement and the GPT-2 byte-level alphabet (see utf8.h).
#include "tokenizer/utf8.h"

#include <vector>

namespace compactor::utf8 {

namespace {

bool in_range(unsigned char c, unsigned char lo, unsigned char hi) { return c >= lo && c <= hi; }

// Allowed range of the second byte for a lead byte (Unicode Table 3-7, well-formed sequences).
void second_byte_range(unsigned char lead, unsigned char* lo, unsigned char* hi) {
  *lo = 0x80;
  *hi = 0xBF;
  if (lead == 0xE0) *lo = 0xA0;
  if (lead == 0xED) *hi = 0x9F;
  if (lead == 0xF0) *lo = 0x90;
  if (lead == 0xF4) *hi = 0x8F;
}

size_t expected_len(unsigned char lead) {
  if (lead < 0x80) return 1;
  if (in_range(lead, 0xC2, 0xDF)) return 2;
  if (in_range(lead, 0xE0, 0xEF)) return 3;
  if (in_range(lead, 0xF0, 0xF4)) return 4;
  return 0;
}

}  // namespace

size_t valid_char_len(std::string_view s, size_t* invalid_len) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t want = s.empty() ? 0 : expected_len(p[0]);
  *invalid_len = 1;
  if (want == 0) return 0;
  size_t i = 1;
  for (; i < want && i < s.size(); ++i) {
    unsigned char lo = 0x80, hi = 0xBF;
    if (i == 1) second_byte_range(p[0], &lo, &hi);
    if (!in_range(p[i], lo, hi)) break;
  }
  if (i == want) return want;
  *invalid_len = i;
  return 0;
}

std::string sanitize(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    size_t bad = 0;
    const size_t n = valid_char_len(s.substr(i), &bad);
    if (n > 0) {
      out.append(s.substr(i, n));
      i += n;
    } else {
      out.append("\xEF\xBF\xBD");
      i += bad;
    }
  }
  return out;
}

bool ends_with_replacement(std::string_view s) { return s.size() >= 3 && s.substr(s.size() - 3) == "\xEF\xBF\xBD"; }

void append_code_point(std::string* out, uint32_t cp) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

uint32_t decode_code_point(std::string_view s, size_t len) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  if (len == 1) return p[0];
  static constexpr unsigned char kLeadMask[5] = {0, 0, 0x1F, 0x0F, 0x07};
  uint32_t cp = p[0] & kLeadMask[len];
  for (size_t i = 1; i < len; ++i) cp = (cp << 6) | (p[i] & 0x3F);
  return cp;
}

namespace {

// GPT-2 keeps the printable Latin-1 bytes as themselves and moves the other 68 bytes to
// U+0100.., in byte order (openai/gpt-2 encoder.py bytes_to_unicode).
std::array<uint32_t, 256> make_byte_to_code_point() {
  std::array<uint32_t, 256> table{};
  uint32_t next = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    table[b] = printable ? b : next++;
  }
  return table;
}

const std::array<uint32_t, 256>& byte_to_code_point() {
  static const std::array<uint32_t, 256> table = make_byte_to_code_point();
  return table;
}

}  // namespace

const std::array<std::string, 256>& byte_level_alphabet() {
  static const std::array<std::string, 256> table = [] {
    std::array<std::string, 256> t;
    for (int b = 0; b < 256; ++b) append_code_point(&t[b], byte_to_code_point()[b]);
    return t;
  }();
  return table;
}

int byte_level_byte(uint32_t cp) {
  static const std::vector<int> inverse = [] {
    std::vector<int> inv(512, -1);
    for (int b = 0; b < 256; ++b) inv[byte_to_code_point()[b]] = b;
    return inv;
  }();
  return cp < inverse.size() ? inverse[cp] : -1;
}

}  // namespace compactor::utf8
