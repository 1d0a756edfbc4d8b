// UTF-8 helpers shared by the tokenizers: validation with Unicode's "maximal subpart"
// replacement (what Rust's String::from_utf8_lossy and Hugging Face tokenizers' decode do),
// code point encoding, and the GPT-2 byte-level alphabet (every byte 0..255 mapped to a
// printable code point, so byte-level BPE vocabularies are plain strings).
// Tests: tests/unit/test_tokenizer_bpe.cpp.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace compactor::utf8 {

// Length of the valid UTF-8 character at the start of `s`, or 0 when it is not valid; then
// `*invalid_len` receives the length of the maximal invalid subpart to replace (>= 1).
size_t valid_char_len(std::string_view s, size_t* invalid_len);

// `s` with every maximal invalid subpart replaced by U+FFFD.
std::string sanitize(std::string_view s);

// True when `s` ends with U+FFFD (EF BF BD).
bool ends_with_replacement(std::string_view s);

void append_code_point(std::string* out, uint32_t cp);

// The code point at the start of `s` (a valid character of `len` bytes, from valid_char_len).
uint32_t decode_code_point(std::string_view s, size_t len);

// GPT-2's bytes_to_unicode: byte b -> the UTF-8 text of its printable stand-in code point.
const std::array<std::string, 256>& byte_level_alphabet();
// Inverse of byte_level_alphabet(): the byte a stand-in code point denotes, or -1.
int byte_level_byte(uint32_t cp);

}  // namespace compactor::utf8
