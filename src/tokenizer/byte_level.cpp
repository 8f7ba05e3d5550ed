// The byte-level alphabet (see byte_level.h), built once from its definition.
#include "tokenizer/byte_level.h"

#include <array>

namespace spense::tok {

namespace {

struct Alphabet {
  std::array<uint32_t, 256> to_char{};
  std::array<int16_t, 512> to_byte{};  // every character of the alphabet is below U+0200
  Alphabet() {
    to_byte.fill(-1);
    uint32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      to_char[b] = printable ? static_cast<uint32_t>(b) : next++;
      to_byte[to_char[b]] = static_cast<int16_t>(b);
    }
  }
};

const Alphabet& alphabet() {
  static const Alphabet a;
  return a;
}

}  // namespace

uint32_t byte_to_char(uint8_t b) { return alphabet().to_char[b]; }

int char_to_byte(uint32_t cp) { return cp < 512 ? alphabet().to_byte[cp] : -1; }

}  // namespace spense::tok
