// The SAX reader of tokenizer.json (see json_reader.h).
#include "tokenizer/json_reader.h"

#include "spense/error.h"

namespace spense::tok {

namespace {

using json = nlohmann::json;

std::string show(const std::string& s) {
  std::string q = json(s).dump(-1, ' ', false, json::error_handler_t::replace);
  return q.size() > 80 ? q.substr(0, 77) + "..." : q;
}

class Reader {
 public:
  explicit Reader(TokenizerJson& out) : out_(out) {}

  std::string error;  // the first problem found

  bool null() { return value(json(nullptr)); }
  bool boolean(bool v) { return value(json(v)); }
  bool number_integer(json::number_integer_t v) {
    if (mode_ == kVocab) return vocab_id(v);
    return value(json(v));
  }
  bool number_unsigned(json::number_unsigned_t v) {
    if (mode_ == kVocab) return v > static_cast<uint64_t>(INT64_MAX) ? vocab_bad() : vocab_id(static_cast<int64_t>(v));
    return value(json(v));
  }
  bool number_float(json::number_float_t v, const std::string&) { return value(json(v)); }
  bool binary(json::binary_t&) { return fail("binary values are not JSON"); }

  bool string(std::string& v) {
    if (mode_ == kMerges) {  // "a b"
      const size_t sp = v.find(' ');
      if (sp == std::string::npos || v.find(' ', sp + 1) != std::string::npos)
        return fail(merge_where() + " " + show(v) + " is not two tokens separated by one space");
      out_.merges.emplace_back(v.substr(0, sp), v.substr(sp + 1));
      return true;
    }
    if (mode_ == kMergePair) {
      pair_.push_back(std::move(v));
      return true;
    }
    return value(json(std::move(v)));
  }

  bool key(std::string& k) {
    key_ = std::move(k);
    return true;
  }

  bool start_object(std::size_t) {
    if (mode_ != kDom) return mode_ == kVocab ? vocab_bad() : merge_bad();
    if (in_model() && key_ == "vocab") {
      mode_ = kVocab;
      out_.has_vocab = true;
      out_.vocab.reserve(1 << 18);
      return true;
    }
    return open(json::object());
  }
  bool end_object() {
    if (mode_ == kVocab) {
      mode_ = kDom;
      return true;
    }
    stack_.pop_back();
    names_.pop_back();
    return true;
  }

  bool start_array(std::size_t) {
    if (mode_ == kVocab) return vocab_bad();
    if (mode_ == kMerges) {  // ["a", "b"]
      mode_ = kMergePair;
      pair_.clear();
      return true;
    }
    if (mode_ == kMergePair) return merge_bad();
    if (in_model() && key_ == "merges") {
      mode_ = kMerges;
      out_.has_merges = true;
      out_.merges.reserve(1 << 18);
      return true;
    }
    return open(json::array());
  }
  bool end_array() {
    if (mode_ == kMergePair) {
      if (pair_.size() != 2) return merge_bad();
      out_.merges.emplace_back(std::move(pair_[0]), std::move(pair_[1]));
      mode_ = kMerges;
      return true;
    }
    if (mode_ == kMerges) {
      mode_ = kDom;
      return true;
    }
    stack_.pop_back();
    names_.pop_back();
    return true;
  }

  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) {
    return fail(std::string("not valid JSON: ") + e.what());
  }

 private:
  enum Mode { kDom, kVocab, kMerges, kMergePair };

  bool fail(const std::string& msg) {
    if (error.empty()) error = msg;
    return false;
  }
  bool in_model() const {
    return stack_.size() == 2 && names_[1] == "model" && stack_.back()->is_object();
  }
  std::string merge_where() const { return "model.merges[" + std::to_string(out_.merges.size()) + "]"; }
  bool merge_bad() { return fail(merge_where() + " is neither \"a b\" nor [\"a\", \"b\"]"); }
  bool vocab_bad() { return fail("model.vocab[" + show(key_) + "] is not an integer id"); }
  bool vocab_id(int64_t id) {
    out_.vocab.emplace_back(std::move(key_), id);
    key_.clear();
    return true;
  }
  bool value(json v) {
    if (mode_ == kVocab) return vocab_bad();
    if (mode_ != kDom) return merge_bad();
    place(std::move(v));
    return true;
  }
  json* place(json v) {
    if (stack_.empty()) {
      out_.doc = std::move(v);
      return &out_.doc;
    }
    json& top = *stack_.back();
    if (top.is_array()) {
      top.push_back(std::move(v));
      return &top.back();
    }
    json& slot = top[key_];
    slot = std::move(v);
    return &slot;
  }
  bool open(json container) {
    const std::string name = stack_.empty() ? "" : stack_.back()->is_array() ? "[]" : key_;
    stack_.push_back(place(std::move(container)));
    names_.push_back(name);
    return true;
  }

  TokenizerJson& out_;
  Mode mode_ = kDom;
  std::vector<json*> stack_;          // the open containers of doc
  std::vector<std::string> names_;    // the key (or "[]") each was opened under
  std::string key_;
  std::vector<std::string> pair_;
};

}  // namespace

TokenizerJson read_tokenizer_json(const std::string& file, std::string_view text) {
  TokenizerJson out;
  Reader reader(out);
  const bool ok = json::sax_parse(text.begin(), text.end(), &reader);
  if (!ok || !reader.error.empty())
    throw Error(file + ": " + (reader.error.empty() ? std::string("not valid JSON") : reader.error));
  return out;
}

}  // namespace spense::tok
