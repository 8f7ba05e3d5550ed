// UTF-8 helpers of the tokenizer: validation, lossy repair (U+FFFD for each maximal
// ill-formed subpart, the Unicode/WHATWG practice also used by JavaScript's TextDecoder and
// Python's errors="replace"), and small code point encode/decode steps.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace spense::tok {

// True if s is well-formed UTF-8 (no overlongs, surrogates or code points past U+10FFFF).
bool utf8_valid(std::string_view s);

// s with every maximal ill-formed subpart replaced by U+FFFD (s itself when valid).
std::string utf8_lossy(std::string_view s);

// Append the UTF-8 form of code point cp (cp must be a Unicode scalar value).
void utf8_append(std::string& out, uint32_t cp);

// Decode the code point starting at s[i] (s must be valid UTF-8); advances i past it.
uint32_t utf8_next(std::string_view s, size_t& i);

// Decode the code point ending just before s[i] (s valid UTF-8, i > 0); moves i to its start.
uint32_t utf8_prev(std::string_view s, size_t& i);

// Length in bytes of the sequence whose lead byte is b (1 for a stray continuation byte).
inline size_t utf8_len(unsigned char b) {
  return b < 0xC0 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
}

}  // namespace spense::tok
