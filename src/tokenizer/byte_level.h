// The byte-level alphabet of GPT-2 style BPE: every byte value is shown as one printable
// Unicode character, so that vocab entries and merges are plain strings. Printable bytes
// ('!'..'~', U+00A1..U+00AC, U+00AE..U+00FF) stand for themselves; the 68 others (controls,
// space, DEL, U+0080..U+00A0, soft hyphen) take U+0100, U+0101, ... in increasing byte order.
#pragma once
#include <cstdint>

namespace spense::tok {

// The character that stands for byte b.
uint32_t byte_to_char(uint8_t b);

// The byte that character cp stands for, or -1 if cp is not in the alphabet.
int char_to_byte(uint32_t cp);

}  // namespace spense::tok
