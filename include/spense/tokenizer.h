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

  // Added/special tokens found verbatim in the text become their ids. No BOS/EOS is added.
  // Ill-formed UTF-8 in text is first repaired (U+FFFD for each maximal ill-formed subpart).
  // Thread-safe (the shared word cache is only try-locked).
  std::vector<int32_t> encode(std::string_view text) const;
  // Byte-level decoding back to UTF-8 (added tokens give their content verbatim); byte
  // sequences that are not valid UTF-8 become U+FFFD. Ids that are no token (e.g. the padded
  // rows of a model's embedding past vocab_size()) are skipped, as tokenizers does.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const;
  int64_t vocab_size() const;               // largest id + 1, added tokens included
  int32_t token_to_id(std::string_view token) const;  // -1 if unknown
  std::string id_to_token(int32_t id) const;          // "" if unknown

  // True for the ids of added tokens marked "special" (what decode(..., true) drops).
  bool is_special(int32_t id) const;
  // The pieces the BPE model sees for text: added tokens split off, each other section
  // NFC-normalized (if the file says so) and cut by the pre-tokenizer. Raw UTF-8 bytes, not
  // the byte-level alphabet; added tokens appear as their content. For tests and debugging.
  std::vector<std::string> pre_tokenize(std::string_view text) const;
  // Empty the word -> ids cache (benchmarks of the uncached path).
  void clear_cache() const;

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace spense
