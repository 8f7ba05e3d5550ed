// Reading tokenizer.json fast: a SAX pass that collects model.vocab and model.merges (the
// bulk of the file: hundreds of thousands of entries) straight into flat vectors, and builds
// an ordinary nlohmann::json document of everything else.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace spense::tok {

struct TokenizerJson {
  nlohmann::json doc;  // the file, less model.vocab / model.merges when collected below
  bool has_vocab = false;   // model.vocab was an object, collected into vocab
  std::vector<std::pair<std::string, int64_t>> vocab;
  bool has_merges = false;  // model.merges was an array, collected into merges
  std::vector<std::pair<std::string, std::string>> merges;
};

// Parses text (the contents of file). Throws spense::Error naming file on invalid JSON or a
// malformed vocab / merges entry.
TokenizerJson read_tokenizer_json(const std::string& file, std::string_view text);

}  // namespace spense::tok
