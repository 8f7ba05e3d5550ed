// spense::Error: the one exception type of the library. Messages name the file, the
// tensor or field, what was expected and what was found; the CLI prints the message on
// one line and exits with code 2 (bad input) or 1 (internal failure).
#pragma once
#include <stdexcept>
#include <string>

namespace spense {

class Error : public std::runtime_error {
 public:
  // exit_code 2: the user's input is at fault (file, flag, shape); 1: internal failure.
  explicit Error(const std::string& msg, int exit_code = 2)
      : std::runtime_error(msg), exit_code_(exit_code) {}
  int exit_code() const { return exit_code_; }

 private:
  int exit_code_;
};

// Prefix the message of any spense::Error thrown by fn with context ("reading config.json: ...").
template <class Fn>
auto with_context(const std::string& context, Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const Error& e) {
    throw Error(context + ": " + e.what(), e.exit_code());
  }
}

}  // namespace spense
