// Hugging Face tokenizer.json, byte-level BPE as used by Qwen2/Qwen3 and Llama 3: NFC
// normalizer, Split-regex pre-tokenizer, byte-level alphabet, merges by rank, added and
// special tokens (matched in the raw text before normalization), decoding.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace spense {

class Tokenizer {
 public:
  // Throws spense::Error naming the file on anything it does not support.
  static Tokenizer load(const std::string& path);  // a tokenizer.json, or a directory holding one
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Added/special tokens found verbatim in the text become their ids.
  std::vector<int32_t> encode(std::string_view text) const;
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const;
  int64_t vocab_size() const;               // largest id + 1, added tokens included
  int32_t token_to_id(std::string_view token) const;  // -1 if unknown
  std::string id_to_token(int32_t id) const;          // "" if unknown

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace spense
