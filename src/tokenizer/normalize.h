// NFC normalization of UTF-8 text with ICU.
#pragma once
#include <string>
#include <string_view>

namespace spense::tok {

// NFC of s (valid UTF-8). Returns s itself when it is already in NFC, else a view of buf,
// which receives the normalized text.
std::string_view nfc(std::string_view s, std::string& buf);

}  // namespace spense::tok
