// PCRE2 compilation and matching for the Split pre-tokenizer (see regex_split.h).
#include "tokenizer/regex_split.h"

#include "spense/error.h"

namespace spense::tok {

namespace {

std::string pcre2_message(int code) {
  PCRE2_UCHAR buf[256];
  if (pcre2_get_error_message(code, buf, sizeof(buf)) < 0) return "PCRE2 error " + std::to_string(code);
  return reinterpret_cast<const char*>(buf);
}

}  // namespace

RegexSplit::RegexSplit(const std::string& pattern, bool literal, const std::string& where)
    : where_(where) {
  int err = 0;
  PCRE2_SIZE err_off = 0;
  // PCRE2 checks that the pattern itself is valid UTF-8.
  const uint32_t opts = PCRE2_UTF | PCRE2_UCP | (literal ? PCRE2_LITERAL : 0u);
  code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), opts, &err,
                        &err_off, nullptr);
  if (!code_)
    throw Error(where + ": cannot compile the regex at offset " + std::to_string(err_off) + ": " +
                pcre2_message(err));
  jit_ = pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE) == 0;  // without JIT it still works, slower
}

RegexSplit::~RegexSplit() { pcre2_code_free(code_); }

RegexSplit::Scratch::Scratch(const RegexSplit& re) {
  md = pcre2_match_data_create_from_pattern(re.code_, nullptr);
  if (!md) throw Error("tokenizer: out of memory for regex match data", 1);
}

RegexSplit::Scratch::~Scratch() {
  pcre2_match_data_free(md);
  pcre2_match_context_free(mctx);
  pcre2_jit_stack_free(jit_stack);
}

bool RegexSplit::find(std::string_view s, size_t start, Scratch& sc, size_t* ms, size_t* me) const {
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(s.data());
  for (int attempt = 0;; ++attempt) {
    // The subject was validated (or repaired) as UTF-8 once by the caller.
    const int rc = pcre2_match(code_, subject, s.size(), start, PCRE2_NO_UTF_CHECK, sc.md, sc.mctx);
    if (rc == PCRE2_ERROR_NOMATCH) return false;
    if (rc >= 0) {
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(sc.md);
      *ms = ov[0];
      *me = ov[1];
      return true;
    }
    // Long runs (e.g. megabytes of spaces) can outgrow the default 32 KiB JIT stack: retry
    // once with a large one.
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT && jit_ && attempt == 0) {
      if (!sc.mctx) {
        sc.mctx = pcre2_match_context_create(nullptr);
        sc.jit_stack = pcre2_jit_stack_create(256 * 1024, 512 * 1024 * 1024, nullptr);
        if (!sc.mctx || !sc.jit_stack) throw Error("tokenizer: out of memory for the regex JIT stack", 1);
        pcre2_jit_stack_assign(sc.mctx, nullptr, sc.jit_stack);
        continue;
      }
    }
    throw Error(where_ + ": regex matching failed: " + pcre2_message(rc), 1);
  }
}

}  // namespace spense::tok
