// One Split pre-tokenizer stage with behavior "Isolated": the text is cut at every match of
// a PCRE2 pattern (compiled with PCRE2_UTF | PCRE2_UCP and JIT-compiled), and both the
// matches and the non-empty stretches between them become pieces, in order.
#pragma once
#include <memory>
#include <string>
#include <string_view>

#ifndef PCRE2_CODE_UNIT_WIDTH
#define PCRE2_CODE_UNIT_WIDTH 8
#endif
#include <pcre2.h>

namespace spense::tok {

class RegexSplit {
 public:
  // literal: the pattern is a plain string (pattern.String), not a regex. `where` names the
  // file and field for error messages.
  RegexSplit(const std::string& pattern, bool literal, const std::string& where);
  ~RegexSplit();
  RegexSplit(const RegexSplit&) = delete;
  RegexSplit& operator=(const RegexSplit&) = delete;

  // Per-call matching state (match data, JIT stack): one per thread at a time.
  class Scratch {
   public:
    explicit Scratch(const RegexSplit& re);
    ~Scratch();
    Scratch(const Scratch&) = delete;
    Scratch& operator=(const Scratch&) = delete;
    pcre2_match_data* md = nullptr;
    pcre2_match_context* mctx = nullptr;   // created with a large JIT stack on first need
    pcre2_jit_stack* jit_stack = nullptr;
  };

  // Calls emit(piece) for every piece of s (valid UTF-8) in order.
  template <class F>
  void split(std::string_view s, Scratch& sc, F&& emit) const {
    const size_t n = s.size();
    size_t prev = 0, start = 0;
    while (start < n) {
      size_t ms, me;
      if (!find(s, start, sc, &ms, &me)) break;
      if (ms > prev) emit(s.substr(prev, ms - prev));
      if (me == ms) {  // an empty match only cuts; step over one character
        prev = ms;
        start = ms + utf8_step(static_cast<unsigned char>(s[ms]));
        continue;
      }
      emit(s.substr(ms, me - ms));
      prev = start = me;
    }
    if (prev < n) emit(s.substr(prev));
  }

 private:
  static size_t utf8_step(unsigned char b) { return b < 0xC0 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4; }
  // The first match at or after start: true with its bounds, false when there is none.
  bool find(std::string_view s, size_t start, Scratch& sc, size_t* ms, size_t* me) const;

  pcre2_code* code_ = nullptr;
  bool jit_ = false;
  std::string where_;
};

}  // namespace spense::tok
