// spense::Tokenizer: loading a Hugging Face tokenizer.json (byte-level BPE) and running the
// pipeline: added tokens split off the raw text, NFC, Split-regex pre-tokenization, BPE.
//
// Everything runs on raw UTF-8 bytes: the byte-level alphabet is undone once at load time
// (every vocab entry is stored as the bytes it stands for), so a pre-token's bytes are the
// BPE input directly and no per-character mapping happens while encoding.
#include "spense/tokenizer.h"

#include <unicode/uchar.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "spense/error.h"
#include "tokenizer/bpe.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/json_reader.h"
#include "tokenizer/normalize.h"
#include "tokenizer/regex_split.h"
#include "tokenizer/utf8.h"

namespace spense {

using json = nlohmann::json;
using namespace tok;

namespace {

// The GPT-2 pattern that ByteLevel applies itself when its use_regex is true.
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool special = false, lstrip = false, rstrip = false, single_word = false;
};

enum : uint8_t { kNone = 0, kVocab = 1, kAdded = 2, kSpecial = 3 };

std::string jq(std::string_view s) {
  std::string q = json(std::string(s)).dump(-1, ' ', false, json::error_handler_t::replace);
  if (q.size() > 80) q = q.substr(0, 77) + "...";
  return q;
}

std::string read_file(const std::string& file) {
  std::FILE* f = std::fopen(file.c_str(), "rb");
  if (!f) throw Error(file + ": cannot open the tokenizer file: " + std::strerror(errno));
  std::string text;
  if (std::fseek(f, 0, SEEK_END) == 0) {
    const long size = std::ftell(f);
    if (size > 0) text.reserve(static_cast<size_t>(size));
    std::rewind(f);
  }
  char buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) text.append(buf, n);
  const bool failed = std::ferror(f);
  const int e = errno;
  std::fclose(f);
  if (failed) throw Error(file + ": cannot read the tokenizer file: " + std::strerror(e));
  return text;
}

// The "type" of a component object, or "" when absent.
std::string type_of(const json& j) {
  if (!j.is_object()) return "";
  auto it = j.find("type");
  return it != j.end() && it->is_string() ? it->get<std::string>() : "";
}

bool flag(const json& j, const char* key, bool dflt = false) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return dflt;
  return it->get<bool>();
}

bool is_word_char(uint32_t cp) { return cp == '_' || u_isalnum(static_cast<UChar32>(cp)); }
bool is_space(uint32_t cp) { return u_isUWhiteSpace(static_cast<UChar32>(cp)); }

}  // namespace

struct Tokenizer::Impl {
  std::string file;
  bool nfc = false;
  std::vector<std::unique_ptr<RegexSplit>> stages;  // applied in order, each to the pieces of the last
  std::unique_ptr<Bpe> bpe;

  std::vector<std::string> id_token;  // tokenizer.json form (byte-level alphabet), by id
  std::vector<std::string> id_bytes;  // what each id decodes to
  std::vector<uint8_t> id_kind;
  StrMap token_id;

  std::vector<AddedToken> added;
  std::array<std::vector<int32_t>, 256> added_by_first;  // by first byte, longest first

  struct Work {  // per-call state
    explicit Work(const Impl& im) {
      for (const auto& s : im.stages) scratch.push_back(std::make_unique<RegexSplit::Scratch>(*s));
    }
    std::vector<std::unique_ptr<RegexSplit::Scratch>> scratch;
    std::string norm;
  };

  struct Segment {
    size_t begin, end;
    int32_t added;  // index into added, or -1 for text
  };

  void load(TokenizerJson& tj);
  void load_normalizer(const json& root);
  void load_pre_tokenizer(const json& j, const std::string& where, bool& byte_level);
  void load_decoder(const json& root);
  void load_model(const json& model, TokenizerJson& tj);
  void load_added(const json& list);
  void set_token(int32_t id, const std::string& token, std::string bytes, uint8_t kind, const std::string& where);

  std::vector<Segment> split_added(std::string_view text) const;
  template <class F>
  void pieces(std::string_view section, Work& w, F&& emit) const;
  template <class F>
  void split_stage(size_t k, std::string_view s, Work& w, F& emit) const;
};

// ---- loading ----------------------------------------------------------------------------

void Tokenizer::Impl::load(TokenizerJson& tj) {
  const json& root = tj.doc;
  if (!root.is_object()) throw Error(file + ": expected a JSON object at the top level");
  auto model = root.find("model");
  if (model == root.end() || !model->is_object()) throw Error(file + ": no \"model\" object");
  load_normalizer(root);
  bool byte_level = false;
  auto pre = root.find("pre_tokenizer");
  if (pre != root.end() && !pre->is_null()) load_pre_tokenizer(*pre, "pre_tokenizer", byte_level);
  if (!byte_level)
    throw Error(file + ": pre_tokenizer has no ByteLevel step; only byte-level BPE is supported");
  load_decoder(root);
  load_model(*model, tj);
  auto added_list = root.find("added_tokens");
  if (added_list != root.end() && !added_list->is_null()) load_added(*added_list);
}

void Tokenizer::Impl::load_normalizer(const json& root) {
  auto it = root.find("normalizer");
  if (it == root.end() || it->is_null()) return;
  const std::string type = type_of(*it);
  if (type == "NFC") {
    nfc = true;
    return;
  }
  if (type == "Sequence") {
    const json& list = it->at("normalizers");
    for (size_t i = 0; i < list.size(); ++i) {
      const std::string t = type_of(list[i]);
      if (t != "NFC")
        throw Error(file + ": normalizer.normalizers[" + std::to_string(i) + "].type " + jq(t) +
                    " is not supported (supported: NFC, a Sequence of NFC, or null)");
      nfc = true;
    }
    return;
  }
  throw Error(file + ": normalizer.type " + jq(type) +
              " is not supported (supported: NFC, a Sequence of NFC, or null)");
}

void Tokenizer::Impl::load_pre_tokenizer(const json& j, const std::string& where, bool& byte_level) {
  const std::string type = type_of(j);
  if (byte_level)
    throw Error(file + ": " + where + " (" + jq(type) +
                ") comes after ByteLevel; only steps before ByteLevel are supported");
  if (type == "Sequence") {
    const json& list = j.at("pretokenizers");
    for (size_t i = 0; i < list.size(); ++i)
      load_pre_tokenizer(list[i], where + ".pretokenizers[" + std::to_string(i) + "]", byte_level);
    return;
  }
  if (type == "Split") {
    const std::string behavior = j.value("behavior", "");
    if (behavior != "Isolated")
      throw Error(file + ": " + where + ".behavior " + jq(behavior) +
                  " is not supported (only \"Isolated\")");
    if (flag(j, "invert")) throw Error(file + ": " + where + ".invert true is not supported");
    const json& pat = j.at("pattern");
    if (pat.contains("Regex")) {
      stages.push_back(std::make_unique<RegexSplit>(pat.at("Regex").get<std::string>(), false,
                                                    file + ": " + where + ".pattern.Regex"));
    } else if (pat.contains("String")) {
      stages.push_back(std::make_unique<RegexSplit>(pat.at("String").get<std::string>(), true,
                                                    file + ": " + where + ".pattern.String"));
    } else {
      throw Error(file + ": " + where + ".pattern has neither \"Regex\" nor \"String\"");
    }
    return;
  }
  if (type == "ByteLevel") {
    if (flag(j, "add_prefix_space"))
      throw Error(file + ": " + where + ".add_prefix_space true is not supported");
    if (flag(j, "use_regex", true))
      stages.push_back(std::make_unique<RegexSplit>(kGpt2Pattern, false, file + ": " + where));
    byte_level = true;
    return;
  }
  throw Error(file + ": " + where + ".type " + jq(type) +
              " is not supported (supported: Split, ByteLevel, a Sequence of them)");
}

void Tokenizer::Impl::load_decoder(const json& root) {
  auto it = root.find("decoder");
  if (it == root.end() || it->is_null()) return;  // decoded byte-level all the same
  const std::string type = type_of(*it);
  if (type == "ByteLevel") return;
  if (type == "Sequence") {
    const json& list = it->at("decoders");
    for (size_t i = 0; i < list.size(); ++i)
      if (type_of(list[i]) != "ByteLevel")
        throw Error(file + ": decoder.decoders[" + std::to_string(i) + "].type " + jq(type_of(list[i])) +
                    " is not supported (only ByteLevel)");
    return;
  }
  throw Error(file + ": decoder.type " + jq(type) + " is not supported (only ByteLevel)");
}

void Tokenizer::Impl::set_token(int32_t id, const std::string& token, std::string bytes, uint8_t kind,
                                const std::string& where) {
  if (id < 0 || id >= (1 << 30)) throw Error(file + ": " + where + ": id " + std::to_string(id) + " out of range");
  if (static_cast<size_t>(id) >= id_token.size()) {
    const size_t n = static_cast<size_t>(id) + 1;
    id_token.resize(n);
    id_bytes.resize(n);
    id_kind.resize(n, kNone);
  }
  if (kind == kVocab && id_kind[id] != kNone)
    throw Error(file + ": " + where + ": id " + std::to_string(id) + " is given to both " +
                jq(id_token[id]) + " and " + jq(token));
  id_token[id] = token;
  id_bytes[id] = std::move(bytes);
  id_kind[id] = kind;
  token_id.set(token, id);
}

void Tokenizer::Impl::load_model(const json& model, TokenizerJson& tj) {
  const std::string type = type_of(model);
  if (type != "BPE" && !(type.empty() && model.contains("merges")))
    throw Error(file + ": model.type " + jq(type) + " is not supported (only byte-level \"BPE\")");
  if (model.contains("dropout") && !model["dropout"].is_null() && model["dropout"].get<double>() != 0.0)
    throw Error(file + ": model.dropout is not supported (must be null)");
  if (flag(model, "byte_fallback")) throw Error(file + ": model.byte_fallback true is not supported");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    auto it = model.find(key);
    if (it != model.end() && !it->is_null() && !it->get<std::string>().empty())
      throw Error(file + ": model." + key + " " + jq(it->get<std::string>()) + " is not supported (must be empty)");
  }
  const bool ignore_merges = flag(model, "ignore_merges");

  if (!tj.has_vocab) throw Error(file + ": model.vocab is missing or not an object");
  StrMap words;
  size_t key_bytes = 0;
  int64_t max_id = -1;
  for (const auto& [token, id] : tj.vocab) {
    key_bytes += token.size();
    max_id = std::max(max_id, id);
  }
  if (ignore_merges) words.reserve(tj.vocab.size(), key_bytes);
  token_id.reserve(tj.vocab.size() + 1024, key_bytes + 16384);
  if (max_id >= 0 && max_id < (1 << 30)) {
    // Added tokens usually follow the vocabulary: leave them room.
    id_token.reserve(static_cast<size_t>(max_id) + 1025);
    id_bytes.reserve(static_cast<size_t>(max_id) + 1025);
    id_kind.reserve(static_cast<size_t>(max_id) + 1025);
    id_token.resize(static_cast<size_t>(max_id) + 1);
    id_bytes.resize(id_token.size());
    id_kind.resize(id_token.size(), kNone);
  }
  for (auto& [token, id] : tj.vocab) {
    if (id < 0 || id >= (1 << 30))
      throw Error(file + ": model.vocab[" + jq(token) + "]: id " + std::to_string(id) + " out of range");
    // Undo the byte-level alphabet; an entry with other characters can never come out of
    // the BPE and decodes to its own UTF-8 (as tokenizers' ByteLevel decoder does).
    std::string bytes;
    bool representable = true;
    for (size_t i = 0; i < token.size();) {
      const int b = char_to_byte(utf8_next(token, i));
      if (b < 0) {
        representable = false;
        break;
      }
      bytes.push_back(static_cast<char>(b));
    }
    if (!representable) bytes = token;
    else if (ignore_merges) words.set(bytes, static_cast<int32_t>(id));
    set_token(static_cast<int32_t>(id), token, std::move(bytes), kVocab, "model.vocab");
  }
  tj.vocab = {};

  int32_t byte_ids[256];
  for (int b = 0; b < 256; ++b) {
    std::string ch;
    utf8_append(ch, byte_to_char(static_cast<uint8_t>(b)));
    const int32_t id = token_id.find(ch);
    if (id < 0) {
      char hex[8];
      std::snprintf(hex, sizeof(hex), "0x%02X", b);
      throw Error(file + ": model.vocab has no token for byte " + hex + " (" + jq(ch) +
                  "); not a byte-level BPE vocabulary");
    }
    byte_ids[b] = id;
  }

  // Merges come either as "a b" strings (tokenizers < 0.20) or as ["a", "b"] pairs; the
  // reader has split both forms.
  if (!tj.has_merges) throw Error(file + ": model.merges is missing or not an array");
  bpe = std::make_unique<Bpe>(byte_ids, std::move(words), ignore_merges, tj.merges.size());
  std::string joined;
  for (size_t i = 0; i < tj.merges.size(); ++i) {
    const std::string& left = tj.merges[i].first;
    const std::string& right = tj.merges[i].second;
    auto where = [&] { return "model.merges[" + std::to_string(i) + "]"; };
    const int32_t a = token_id.find(left), b = token_id.find(right);
    joined.assign(left).append(right);
    const int32_t ab = token_id.find(joined);
    if (a < 0) throw Error(file + ": " + where() + ": " + jq(left) + " is not in model.vocab");
    if (b < 0) throw Error(file + ": " + where() + ": " + jq(right) + " is not in model.vocab");
    if (ab < 0) throw Error(file + ": " + where() + ": the merged token " + jq(joined) + " is not in model.vocab");
    bpe->add_merge(a, b, ab, static_cast<uint32_t>(i));
  }
  tj.merges = {};
}

void Tokenizer::Impl::load_added(const json& list) {
  if (!list.is_array()) throw Error(file + ": added_tokens is not an array");
  for (size_t i = 0; i < list.size(); ++i) {
    const json& t = list[i];
    const std::string where = "added_tokens[" + std::to_string(i) + "]";
    if (!t.is_object() || !t.contains("content") || !t.contains("id") || !t["content"].is_string() ||
        !t["id"].is_number_integer())
      throw Error(file + ": " + where + " needs a string \"content\" and an integer \"id\"");
    AddedToken a;
    a.content = t["content"].get<std::string>();
    const int64_t id = t["id"].get<int64_t>();
    if (id < 0 || id >= (1 << 30)) throw Error(file + ": " + where + ": id " + std::to_string(id) + " out of range");
    a.id = static_cast<int32_t>(id);
    a.special = flag(t, "special");
    a.lstrip = flag(t, "lstrip");
    a.rstrip = flag(t, "rstrip");
    a.single_word = flag(t, "single_word");
    if (a.content.empty()) throw Error(file + ": " + where + " has an empty content");
    if (!utf8_valid(a.content)) throw Error(file + ": " + where + " content is not valid UTF-8");
    set_token(a.id, a.content, a.content, a.special ? kSpecial : kAdded, where);
    added.push_back(std::move(a));
  }
  for (size_t i = 0; i < added.size(); ++i)
    added_by_first[static_cast<unsigned char>(added[i].content[0])].push_back(static_cast<int32_t>(i));
  for (auto& v : added_by_first)
    std::stable_sort(v.begin(), v.end(), [&](int32_t x, int32_t y) {
      return added[x].content.size() > added[y].content.size();
    });
}

// ---- encoding ---------------------------------------------------------------------------

// Leftmost-longest matches of the added tokens in the raw text, then lstrip/rstrip: a token
// with lstrip (rstrip) takes the whitespace to its left (right) out of the text next to it.
std::vector<Tokenizer::Impl::Segment> Tokenizer::Impl::split_added(std::string_view text) const {
  std::vector<Segment> segs;
  const size_t n = text.size();
  size_t start = 0, i = 0;
  if (!added.empty()) {
    while (i < n) {
      const auto& cands = added_by_first[static_cast<unsigned char>(text[i])];
      int32_t hit = -1;
      for (int32_t k : cands) {
        const std::string& c = added[k].content;
        if (c.size() > n - i || std::memcmp(text.data() + i, c.data(), c.size()) != 0) continue;
        if (added[k].single_word) {  // no word character may touch it on either side
          size_t p = i, q = i + c.size();
          if (p > 0 && is_word_char(utf8_prev(text, p))) continue;
          if (q < n && is_word_char(utf8_next(text, q))) continue;
        }
        hit = k;
        break;
      }
      if (hit < 0) {
        ++i;
        continue;
      }
      if (i > start) segs.push_back({start, i, -1});
      segs.push_back({i, i + added[hit].content.size(), hit});
      i += added[hit].content.size();
      start = i;
    }
  }
  if (start < n) segs.push_back({start, n, -1});
  for (size_t k = 0; k < segs.size(); ++k) {
    if (segs[k].added < 0) continue;
    const AddedToken& a = added[segs[k].added];
    if (a.lstrip && k > 0 && segs[k - 1].added < 0) {
      Segment& s = segs[k - 1];
      while (s.end > s.begin) {
        size_t p = s.end;
        if (!is_space(utf8_prev(text, p))) break;
        s.end = p;
      }
    }
    if (a.rstrip && k + 1 < segs.size() && segs[k + 1].added < 0) {
      Segment& s = segs[k + 1];
      while (s.begin < s.end) {
        size_t q = s.begin;
        if (!is_space(utf8_next(text, q))) break;
        s.begin = q;
      }
    }
  }
  return segs;
}

template <class F>
void Tokenizer::Impl::split_stage(size_t k, std::string_view s, Work& w, F& emit) const {
  if (k == stages.size()) {
    emit(s);
    return;
  }
  stages[k]->split(s, *w.scratch[k], [&](std::string_view p) { split_stage(k + 1, p, w, emit); });
}

// The pre-tokens of one text section (between added tokens).
template <class F>
void Tokenizer::Impl::pieces(std::string_view section, Work& w, F&& emit) const {
  if (section.empty()) return;
  const std::string_view t = nfc ? tok::nfc(section, w.norm) : section;
  if (t.empty()) return;
  split_stage(0, t, w, emit);
}

// ---- Tokenizer --------------------------------------------------------------------------

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::load(const std::string& path) {
  namespace fs = std::filesystem;
  std::string file = path;
  std::error_code ec;
  if (fs::is_directory(path, ec)) file = (fs::path(path) / "tokenizer.json").string();
  TokenizerJson tj = read_tokenizer_json(file, read_file(file));
  auto impl = std::make_unique<Impl>();
  impl->file = file;
  try {
    impl->load(tj);
  } catch (const json::exception& e) {
    throw Error(file + ": unexpected tokenizer.json structure: " + e.what());
  }
  return Tokenizer(std::move(impl));
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  std::string repaired;
  if (!utf8_valid(text)) {
    repaired = utf8_lossy(text);
    text = repaired;
  }
  std::vector<int32_t> out;
  out.reserve(text.size() / 4 + 8);
  Impl::Work w(*impl_);
  const Bpe& bpe = *impl_->bpe;
  for (const Impl::Segment& s : impl_->split_added(text)) {
    if (s.added >= 0) {
      out.push_back(impl_->added[s.added].id);
      continue;
    }
    impl_->pieces(text.substr(s.begin, s.end - s.begin), w,
                  [&](std::string_view piece) { bpe.encode_word(piece, out); });
  }
  return out;
}

std::vector<std::string> Tokenizer::pre_tokenize(std::string_view text) const {
  std::string repaired;
  if (!utf8_valid(text)) {
    repaired = utf8_lossy(text);
    text = repaired;
  }
  std::vector<std::string> out;
  Impl::Work w(*impl_);
  for (const Impl::Segment& s : impl_->split_added(text)) {
    if (s.added >= 0) {
      out.push_back(impl_->added[s.added].content);
      continue;
    }
    impl_->pieces(text.substr(s.begin, s.end - s.begin), w,
                  [&](std::string_view piece) { out.emplace_back(piece); });
  }
  return out;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  const Impl& im = *impl_;
  std::string bytes;
  for (int32_t id : ids) {
    if (id < 0 || static_cast<size_t>(id) >= im.id_kind.size()) continue;
    const uint8_t kind = im.id_kind[id];
    if (kind == kNone || (skip_special && kind == kSpecial)) continue;
    bytes += im.id_bytes[id];
  }
  if (utf8_valid(bytes)) return bytes;
  return utf8_lossy(bytes);
}

int64_t Tokenizer::vocab_size() const { return static_cast<int64_t>(impl_->id_token.size()); }

int32_t Tokenizer::token_to_id(std::string_view token) const { return impl_->token_id.find(token); }

std::string Tokenizer::id_to_token(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= impl_->id_token.size()) return "";
  return impl_->id_token[id];
}

bool Tokenizer::is_special(int32_t id) const {
  return id >= 0 && static_cast<size_t>(id) < impl_->id_kind.size() && impl_->id_kind[id] == kSpecial;
}

void Tokenizer::clear_cache() const { impl_->bpe->clear_cache(); }

}  // namespace spense
