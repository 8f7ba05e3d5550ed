// NFC through ICU's UTF-8 API (see normalize.h).
#include "tokenizer/normalize.h"

#include <unicode/bytestream.h>
#include <unicode/normalizer2.h>
#include <unicode/stringpiece.h>

#include "spense/error.h"

namespace spense::tok {

namespace {

const icu::Normalizer2& nfc_instance() {
  static const icu::Normalizer2* inst = [] {
    UErrorCode st = U_ZERO_ERROR;
    const icu::Normalizer2* n = icu::Normalizer2::getNFCInstance(st);
    if (U_FAILURE(st) || !n) throw Error(std::string("tokenizer: ICU has no NFC normalizer: ") + u_errorName(st), 1);
    return n;
  }();
  return *inst;
}

}  // namespace

std::string_view nfc(std::string_view s, std::string& buf) {
  // Code points below U+0300 are all NFC-stable and none composes with a following one of
  // them; in UTF-8 exactly those code points are written with bytes below 0xCC.
  bool simple = true;
  for (unsigned char c : s) {
    if (c >= 0xCC) {
      simple = false;
      break;
    }
  }
  if (simple) return s;
  if (s.size() > 0x7FFFFFFF) throw Error("tokenizer: a text section over 2 GiB cannot be normalized");
  const icu::Normalizer2& n = nfc_instance();
  UErrorCode st = U_ZERO_ERROR;
  const icu::StringPiece sp(s.data(), static_cast<int32_t>(s.size()));
  if (n.isNormalizedUTF8(sp, st) && U_SUCCESS(st)) return s;
  st = U_ZERO_ERROR;
  buf.clear();
  icu::StringByteSink<std::string> sink(&buf, static_cast<int32_t>(s.size() + s.size() / 8));
  n.normalizeUTF8(0, sp, sink, nullptr, st);
  if (U_FAILURE(st)) throw Error(std::string("tokenizer: NFC normalization failed: ") + u_errorName(st), 1);
  return buf;
}

}  // namespace spense::tok
