// spense::Tokenizer against an independent reference.
//
// Parity: the inputs (tag-stripped Brown corpus documents, over 1 MB, and edge cases) are
// written to a temporary directory, tools/tokref/encode.mjs encodes and decodes them with the
// JavaScript tokenizer @lenml/tokenizers (a fork of transformers.js), and our ids are compared
// with its ids one by one. Round trips are checked against JavaScript's own NFC
// (String.prototype.normalize). Two tokenizers are compared: the real Qwen3 tokenizer.json
// and a Llama 3 style variant of it (no normalizer, ignore_merges, the Llama 3 pattern with
// \p{N}{1,3}, merges in the older "a b" format, added tokens with lstrip/rstrip).
//
// The small hand-built tokenizers at the end check the BPE rules and added-token options
// against expectations worked out by hand from the definitions, and the error messages.
//
// Needs node and the references fetched by scripts/fetch_refs.sh (CI fetches them); without
// them the parity tests FAIL, they do not skip.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "spense/error.h"
#include "spense/tokenizer.h"

using namespace spense;
using json = nlohmann::json;
namespace fs = std::filesystem;
using namespace std::string_literals;

namespace {

const std::string kRefs = SPENSE_REFS;
const std::string kSource = SPENSE_SOURCE_DIR;
const std::string kFetchHint =
    "; run scripts/fetch_refs.sh (it installs the JavaScript reference tokenizer, the Qwen3 "
    "tokenizer and the Brown corpus into " + kRefs + ")";

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  if (!out) throw std::runtime_error("cannot write " + path);
}

std::string make_temp_dir() {
  std::string tmpl = (fs::temp_directory_path() / "spense-tok-XXXXXX").string();
  if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  return tmpl;
}

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? "'\\''"s : std::string(1, c);
  return q + "'";
}

// The Brown corpus with its tags stripped: every whitespace-separated "word/tag" becomes
// "word"; the whitespace (tabs opening paragraphs, newlines between sentences) is kept.
std::string strip_brown_tags(const std::string& tagged) {
  std::string out;
  out.reserve(tagged.size());
  size_t i = 0;
  while (i < tagged.size()) {
    if (std::isspace(static_cast<unsigned char>(tagged[i]))) {
      out += tagged[i++];
      continue;
    }
    size_t j = i;
    while (j < tagged.size() && !std::isspace(static_cast<unsigned char>(tagged[j]))) ++j;
    const std::string tok = tagged.substr(i, j - i);
    const size_t slash = tok.rfind('/');
    out += slash == std::string::npos || slash == 0 ? tok : tok.substr(0, slash);
    i = j;
  }
  return out;
}

// Every `step`-th Brown file (c[a-r]NN, sorted), so that all its genres are present.
std::vector<std::string> brown_documents(size_t step) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(kRefs + "/brown")) {
    const std::string n = e.path().filename().string();
    if (n.size() == 4 && n[0] == 'c' && std::isdigit(static_cast<unsigned char>(n[2]))) names.push_back(n);
  }
  std::sort(names.begin(), names.end());
  std::vector<std::string> docs;
  for (size_t i = 0; i < names.size(); i += step) docs.push_back(strip_brown_tags(read_text(kRefs + "/brown/" + names[i])));
  return docs;
}

// Edge cases: every one is valid UTF-8.
std::vector<std::string> edge_cases() {
  std::vector<std::string> v = {
      "",
      "Hello world",
      // emoji, ZWJ sequences, skin tones, flags, variation selectors
      "\U0001F44D\U0001F3FD thumbs up", "family \U0001F468\u200D\U0001F469\u200D\U0001F467\u200D\U0001F466!",
      "\U0001F469\U0001F3FF\u200D\U0001F4BB coder", "\U0001F3F3\uFE0F\u200D\U0001F308 flag",
      "\u2764\uFE0F love", "\U0001F1EF\U0001F1F5\U0001F1FA\U0001F1F8", "\U0001F600\U0001F600\U0001F600 grin",
      // CJK and other scripts
      "你好，世界！这是一个测试。", "日本語のテキスト、カタカナとひらがな。", "한국어 문장입니다.",
      "مرحبا بالعالم، كيف حالك؟", "שלום עולם", "नमस्ते दुनिया", "สวัสดีชาวโลก", "Ελληνικά κείμενο",
      "Русский текст с цифрами 123", "English中文Русский日本語mixed",
      // decomposed forms that NFC composes
      "Cafe\u0301 au lait", "e\u0301", "A\u030Angstro\u0308m", "man\u0303ana", "\u1100\u1161\u11A8",
      "q\u0307\u0323 and s\u0323\u0307", "\u2126 ohm and \u212B angstrom", "Zo\u0308e\u0308 na\u0131\u0308ve",
      // whitespace runs, trailing, CR/LF, tabs, unusual spaces
      "   ", "\t\t", "\n\n\n", "a  b   c    d", "trailing   ", "trailing\n", " \n \n ", "\r\n\r\n",
      "line1\nline2\r\nline3\rline4", "tab\tseparated\tvalues\t", "\u00A0nbsp\u00A0", "\u3000ideographic\u3000space",
      "em\u2003space", "x \u2028 y \u2029 z", "  leading", "\n\tindented\n\t\tmore", "end with spaces and newline  \n",
      // digits and numbers
      "1234567890", "3.14159265358979323846264338327950288", "1,000,000 and 1.000.000", "year 2024 vs 1999",
      "\u0661\u0662\u0663 arabic-indic digits", "\uFF11\uFF12\uFF13 fullwidth", "Ⅻ roman ½ fraction ²³",
      "0x1F600 0b1010 1e-10 -42 +7",
      // contractions
      "it's", "IT'S", "I'm", "we'll", "WE'LL", "they've", "You'D", "don't DON'T can't", "'s'S'T'RE'Ve'lL",
      "O'Neil's rock 'n' roll", "it\u2019s curly", "the students' books", "'tis ' s",
      // added/special tokens inside text
      "<|im_start|>user\nhi<|im_end|>", "<|endoftext|>", "text<|endoftext|>more text",
      "<|im_start|><|im_end|>", "<|im_start", "<think>\nreasoning\n</think>\n\nanswer",
      "<|endoftext|><|endoftext|>", "a <|im_end|> b", "<|im_end|", "<|<|im_end|>|>",
      "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>assistant\n",
      "<tool_call>\n{\"name\": \"f\"}\n</tool_call>",
      // punctuation runs and symbols
      "!!!???...", "Hello, world! How are you?", "---===+++", "(){}[]<>", "@#$%^&*", "...\n...",
      "\u00ABquoted\u00BB \u2014em dash\u2014 \u2026", "\"double\" 'single'", ";;\n\n;;", "a.b,c;d:e",
      // code, URLs
      "def f(x):\n    return x ** 2\n", "if (a && b) { c++; }\n", "https://example.com/path?q=1&r=2#frag",
      "user@example.com", "{\"key\": [1, 2, 3], \"nested\": {\"a\": null}}",
      // unusual but valid UTF-8
      "a\x01b\x7F""c", "zero\u200Bwidth", "\uFFFD replacement", "\uE000 private use", "\uFFFF noncharacter",
      "\U0010FFFF max", "\U0001D518\U0001D52B\U0001D526\U0001D520 math letters", "\u0301starts with a mark",
      "Z\u0351\u0352\u0353\u0354\u0355\u0356\u0357\u0358\u0359\u035A zalgo", "\xC2\x80\xC2\x9F C1 controls",
      "\xF0\x9F\x98\x80\xE2\x82\xAC\xC2\xA2$",
  };
  v.push_back("nul\0byte"s);
  // long runs (the BPE's long-word path, the regex on long matches)
  v.push_back(std::string(5000, 'a'));
  v.push_back(std::string(3000, ' ') + "x");
  v.push_back(std::string(1000, '\n'));
  v.push_back(std::string(2000, '7'));
  std::string s;
  for (int i = 0; i < 500; ++i) s += "\U0001F600";
  v.push_back(s);
  s.clear();
  const char* cjk[] = {"的", "一", "是", "在", "不", "了", "有", "和", "人", "这", "中", "大", "为", "上", "个", "国"};
  for (int i = 0; i < 2000; ++i) s += cjk[(i * 7 + i / 3) % 16];
  v.push_back(s);
  s.clear();
  uint32_t x = 12345;
  for (int i = 0; i < 600; ++i) {
    x = x * 1103515245u + 12345u;
    s += static_cast<char>('a' + (x >> 16) % 26);
  }
  v.push_back(s);
  return v;
}

// The decomposed edge cases whose NFC differs from them (checked against the reference NFC).
const std::vector<std::string> kDecomposed = {"Cafe\u0301 au lait", "e\u0301", "A\u030Angstro\u0308m",
                                              "man\u0303ana", "\u1100\u1161\u11A8", "\u2126 ohm and \u212B angstrom"};

struct Reference {
  std::string error;             // non-empty when the reference could not be produced
  std::string tokenizer_path;
  std::vector<std::string> texts;
  size_t brown_docs = 0;         // texts[0 .. brown_docs) are Brown documents
  std::vector<std::vector<std::string>> decode_inputs;  // tokens
  std::vector<int32_t> lookups;
  json out;
};

std::string capture(const std::string& cmd) {
  std::string out;
  if (FILE* p = popen(cmd.c_str(), "r")) {
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
    pclose(p);
  }
  return out;
}

uint64_t fnv1a(std::string_view s, uint64_t h = 0xCBF29CE484222325ULL) {
  for (unsigned char c : s) h = (h ^ c) * 0x100000001B3ULL;
  return h;
}

// Runs encode.mjs on the inputs; fills ref.out or ref.error. gtest_discover_tests runs every
// test in its own process, so the reference output is kept in the temporary directory under
// a hash of everything it depends on (inputs, tokenizer, config, script, reference package,
// node version) and reused by the other processes.
void run_reference(Reference& ref, const std::string& dir, const std::string& name, const std::string& config) {
  json in;
  in["encode"] = ref.texts;
  in["decode"] = ref.decode_inputs;
  in["lookup"] = ref.lookups;
  const std::string inputs = in.dump();
  const std::string script = kSource + "/tools/tokref/encode.mjs";
  uint64_t key = fnv1a(inputs);
  for (const std::string& dep : {ref.tokenizer_path, config, script,
                                 kRefs + "/node_modules/@lenml/tokenizers/package.json",
                                 kRefs + "/node_modules/@lenml/tokenizers/dist/main.mjs"})
    key = fnv1a(dep.empty() ? std::string("-") : read_text(dep), key);
  key = fnv1a(capture("node --version 2>&1"), key);
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(key));
  const fs::path cache_dir = fs::temp_directory_path() / "spense-tokref-cache";
  const std::string cached = (cache_dir / (name + "-" + hex + ".json")).string();
  if (fs::exists(cached)) {
    try {
      ref.out = json::parse(read_text(cached));
      return;
    } catch (const json::exception&) {
      // a damaged entry: produce it again
    }
  }
  const std::string in_path = dir + "/" + name + "-in.json", out_path = dir + "/" + name + "-ref.json",
                    log = dir + "/" + name + "-node.log";
  write_text(in_path, inputs);
  std::string cmd = "node " + shell_quote(script) + " --refs " + shell_quote(kRefs) + " --tokenizer " +
                    shell_quote(ref.tokenizer_path) + " --in " + shell_quote(in_path) + " --out " + shell_quote(out_path);
  if (!config.empty()) cmd += " --config " + shell_quote(config);
  cmd += " > " + shell_quote(log) + " 2>&1";
  const int rc = std::system(cmd.c_str());
  if (rc != 0) {
    ref.error = "the reference tokenizer failed (" + cmd + "): " + read_text(log);
    return;
  }
  const std::string text = read_text(out_path);
  ref.out = json::parse(text);
  std::error_code ec;
  fs::create_directories(cache_dir, ec);
  const std::string tmp = cached + ".tmp-" + std::to_string(getpid());
  write_text(tmp, text);
  fs::rename(tmp, cached, ec);  // atomic; a failure only means no reuse
}

std::string check_prerequisites() {
  if (std::system("node --version > /dev/null 2>&1") != 0) return "node is not installed (scripts/setup.sh installs it)" + kFetchHint;
  for (const char* p : {"/qwen3/tokenizer.json", "/qwen3/tokenizer_config.json", "/brown/ca01",
                        "/node_modules/@lenml/tokenizers/dist/main.mjs"})
    if (!fs::exists(kRefs + p)) return kRefs + p + " is missing" + kFetchHint;
  return "";
}

class TempDir {
 public:
  TempDir() : path(make_temp_dir()) {}
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string path;
};

TempDir& temp_dir() {
  static TempDir d;
  return d;
}

std::vector<int32_t> ids_of(const json& j) { return j.get<std::vector<int32_t>>(); }

// Qwen3: Brown (every 4th document: over 1 MB) and the edge cases.
const Reference& qwen3() {
  static Reference ref = [] {
    Reference r;
    r.error = check_prerequisites();
    if (!r.error.empty()) return r;
    r.tokenizer_path = kRefs + "/qwen3/tokenizer.json";
    r.texts = brown_documents(4);
    r.brown_docs = r.texts.size();
    for (auto& e : edge_cases()) r.texts.push_back(e);
    // Decoding (token lists, made ids by the reference): byte tokens that leave UTF-8
    // sequences cut (byte-level characters: U+00E4 = E4, U+0142 = A0, U+0122 = 80), special
    // and non-special added tokens.
    r.decode_inputs = {
        {"Hello", "\u00E4", "\u00BD", "<|im_end|>", "\u0142", "\u0120world"},  // E4 BD | A0
        {"\u00F0", "\u0142", "\u0142"},       // F0 A0 A0: a cut 4-byte sequence
        {"\u0142", "\u0142", "\u00F0"},       // stray continuation bytes, a lone lead byte
        {"\u00ED", "\u0142", "\u0122"},       // ED A0 80: a surrogate
        {"<|im_start|>", "user", "\u010A", "hi", "<|im_end|>", "<think>", "<|endoftext|>"},
        {},
    };
    for (int32_t i = 0; i < 151700; i += 997) r.lookups.push_back(i);
    for (int32_t i = 151630; i < 151680; ++i) r.lookups.push_back(i);
    run_reference(r, temp_dir().path, "qwen3", kRefs + "/qwen3/tokenizer_config.json");
    return r;
  }();
  return ref;
}

// The Llama 3 style variant of the Qwen3 file (see the file comment).
const Reference& variant() {
  static Reference ref = [] {
    Reference r;
    r.error = check_prerequisites();
    if (!r.error.empty()) return r;
    json j = json::parse(read_text(kRefs + "/qwen3/tokenizer.json"));
    j["normalizer"] = nullptr;
    j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] =
        R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
    j["model"]["ignore_merges"] = true;
    for (auto& m : j["model"]["merges"]) m = m[0].get<std::string>() + " " + m[1].get<std::string>();
    for (auto& a : j["added_tokens"]) {
      if (a["content"] == "<|im_end|>") a["lstrip"] = true;
      if (a["content"] == "<|im_start|>") a["rstrip"] = true;
    }
    r.tokenizer_path = temp_dir().path + "/variant.json";
    write_text(r.tokenizer_path, j.dump());
    r.texts = brown_documents(16);
    r.brown_docs = r.texts.size();
    for (auto& e : edge_cases()) r.texts.push_back(e);
    r.texts.push_back("<|im_start|>  \n user  <|im_end|>\n");
    r.texts.push_back("x\t<|im_end|>\t<|im_start|>\t\ty");
    run_reference(r, temp_dir().path, "variant", "");
    return r;
  }();
  return ref;
}

std::string show(const std::string& s, size_t max = 120) {
  std::string q = json(s).dump(-1, ' ', false, json::error_handler_t::replace);
  return q.size() > max ? q.substr(0, max) + "..." : q;
}

// "" when equal, else where the first difference is, with ids, tokens and text around it.
std::string compare_ids(const Tokenizer& tok, const std::string& text, const std::vector<int32_t>& ours,
                        const std::vector<int32_t>& ref) {
  size_t k = 0;
  while (k < ours.size() && k < ref.size() && ours[k] == ref[k]) ++k;
  if (k == ours.size() && k == ref.size()) return "";
  std::ostringstream os;
  os << "first mismatch at id #" << k << " (ours " << ours.size() << " ids, reference " << ref.size() << ")\n";
  auto window = [&](const std::vector<int32_t>& v) {
    std::ostringstream w;
    for (size_t i = k >= 4 ? k - 4 : 0; i < std::min(v.size(), k + 5); ++i)
      w << (i == k ? " >>" : " ") << v[i] << "=" << show(tok.id_to_token(v[i]), 40);
    return w.str();
  };
  os << "  ours:     " << window(ours) << "\n  reference:" << window(ref) << "\n";
  const std::vector<int32_t> prefix(ref.begin(), ref.begin() + std::min(k, ref.size()));
  const size_t at = tok.decode(prefix).size();
  const size_t from = at >= 60 ? at - 60 : 0;
  os << "  text near byte " << at << ": " << show(text.substr(from, 60), 200) << " | "
     << show(text.substr(std::min(at, text.size()), 60), 200);
  return os.str();
}

#define REQUIRE_REFERENCE(ref) ASSERT_TRUE((ref).error.empty()) << (ref).error

}  // namespace

// ---- parity with @lenml/tokenizers ------------------------------------------------------

TEST(tokenizer_Parity, Qwen3BrownCorpusOverOneMegabyte) {
  const Reference& ref = qwen3();
  REQUIRE_REFERENCE(ref);
  const Tokenizer tok = Tokenizer::load(ref.tokenizer_path);
  size_t bytes = 0, ids = 0;
  for (size_t i = 0; i < ref.brown_docs; ++i) {
    const auto ours = tok.encode(ref.texts[i]);
    const std::string diff = compare_ids(tok, ref.texts[i], ours, ids_of(ref.out["ids"][i]));
    ASSERT_TRUE(diff.empty()) << "Brown document #" << i << ": " << diff;
    bytes += ref.texts[i].size();
    ids += ours.size();
  }
  EXPECT_GE(bytes, 1u << 20) << "the comparison must cover at least 1 MB of text";
  std::printf("compared %zu documents, %zu bytes, %zu ids with the reference\n", ref.brown_docs, bytes, ids);
}

TEST(tokenizer_Parity, Qwen3EdgeCases) {
  const Reference& ref = qwen3();
  REQUIRE_REFERENCE(ref);
  const Tokenizer tok = Tokenizer::load(ref.tokenizer_path);
  int failures = 0;
  for (size_t i = ref.brown_docs; i < ref.texts.size(); ++i) {
    const std::string diff = compare_ids(tok, ref.texts[i], tok.encode(ref.texts[i]), ids_of(ref.out["ids"][i]));
    EXPECT_TRUE(diff.empty()) << "edge case " << show(ref.texts[i]) << ": " << diff;
    failures += !diff.empty();
  }
  EXPECT_EQ(failures, 0);
}

TEST(tokenizer_Parity, Qwen3DecodedIsNfcOfInput) {
  const Reference& ref = qwen3();
  REQUIRE_REFERENCE(ref);
  const Tokenizer tok = Tokenizer::load(ref.tokenizer_path);
  for (size_t i = 0; i < ref.texts.size(); ++i) {
    const std::string nfc = ref.out["nfc"][i].get<std::string>();  // JavaScript's normalize("NFC")
    EXPECT_EQ(tok.decode(tok.encode(ref.texts[i])), nfc) << "input " << show(ref.texts[i]);
    // Our decoding of the reference ids agrees with the reference's decoding of them.
    EXPECT_EQ(tok.decode(ids_of(ref.out["ids"][i])), ref.out["decoded"][i].get<std::string>())
        << "input " << show(ref.texts[i]);
  }
  // The decomposed cases really are changed by NFC, so the round trip above tests it.
  for (const std::string& d : kDecomposed) {
    auto it = std::find(ref.texts.begin(), ref.texts.end(), d);
    ASSERT_NE(it, ref.texts.end());
    EXPECT_NE(ref.out["nfc"][it - ref.texts.begin()].get<std::string>(), d) << show(d);
  }
}

TEST(tokenizer_Parity, Qwen3DecodeOfCutSequencesAndSpecials) {
  const Reference& ref = qwen3();
  REQUIRE_REFERENCE(ref);
  const Tokenizer tok = Tokenizer::load(ref.tokenizer_path);
  ASSERT_EQ(ref.out["decode_ids"].size(), ref.decode_inputs.size());
  for (size_t i = 0; i < ref.decode_inputs.size(); ++i) {
    const std::vector<int32_t> ids = ids_of(ref.out["decode_ids"][i]);
    EXPECT_EQ(tok.decode(ids), ref.out["decode"][i].get<std::string>()) << "decode input #" << i;
    EXPECT_EQ(tok.decode(ids, true), ref.out["decode_skip"][i].get<std::string>())
        << "decode input #" << i << " skipping special tokens";
  }
}

TEST(tokenizer_Parity, Qwen3VocabularyLookups) {
  const Reference& ref = qwen3();
  REQUIRE_REFERENCE(ref);
  const Tokenizer tok = Tokenizer::load(ref.tokenizer_path);
  EXPECT_EQ(tok.vocab_size(), ref.out["vocab_size"].get<int64_t>());
  int specials = 0;
  for (const json& t : ref.out["tokens"]) {
    const int32_t id = t[0].get<int32_t>();
    if (t[1].is_null()) {
      EXPECT_EQ(tok.id_to_token(id), "") << "id " << id;
      continue;
    }
    const std::string token = t[1].get<std::string>();
    EXPECT_EQ(tok.id_to_token(id), token) << "id " << id;
    EXPECT_EQ(tok.token_to_id(token), id) << show(token);
    EXPECT_EQ(tok.is_special(id), t[2].get<bool>()) << "id " << id << " " << show(token);
    specials += t[2].get<bool>();
  }
  EXPECT_GT(specials, 10);
  EXPECT_EQ(tok.token_to_id("no such token, surely"), -1);
  EXPECT_EQ(tok.id_to_token(-1), "");
  EXPECT_EQ(tok.id_to_token(1 << 29), "");
}

TEST(tokenizer_Parity, Llama3StyleVariant) {
  const Reference& ref = variant();
  REQUIRE_REFERENCE(ref);
  const Tokenizer tok = Tokenizer::load(ref.tokenizer_path);
  size_t bytes = 0;
  int failures = 0;
  for (size_t i = 0; i < ref.texts.size() && failures < 10; ++i) {
    const std::string diff = compare_ids(tok, ref.texts[i], tok.encode(ref.texts[i]), ids_of(ref.out["ids"][i]));
    EXPECT_TRUE(diff.empty()) << "input #" << i << " " << show(ref.texts[i]) << ": " << diff;
    failures += !diff.empty();
    if (i < ref.brown_docs) bytes += ref.texts[i].size();
    EXPECT_EQ(tok.decode(ids_of(ref.out["ids"][i])), ref.out["decoded"][i].get<std::string>());
  }
  EXPECT_GT(bytes, 200000u);
  // Without a normalizer the text comes back byte for byte (lstrip/rstrip aside).
  for (size_t i = 0; i < ref.texts.size(); ++i) {
    if (ref.texts[i].find("<|im_") != std::string::npos) continue;
    EXPECT_EQ(tok.decode(tok.encode(ref.texts[i])), ref.texts[i]) << show(ref.texts[i]);
  }
}

// ---- behaviour on our own ---------------------------------------------------------------

TEST(tokenizer_Encode, ConcurrentEncodingMatchesSerial) {
  const Reference& ref = qwen3();
  REQUIRE_REFERENCE(ref);
  const Tokenizer tok = Tokenizer::load(ref.tokenizer_path);
  std::atomic<int> mismatches{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (size_t i = t; i < ref.texts.size(); i += 2)
        if (tok.encode(ref.texts[i]) != ids_of(ref.out["ids"][i])) ++mismatches;
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches.load(), 0);
}

TEST(tokenizer_Encode, IllFormedUtf8IsRepairedLikeADecoder) {
  const Reference& ref = qwen3();
  REQUIRE_REFERENCE(ref);
  const Tokenizer tok = Tokenizer::load(ref.tokenizer_path);
  const std::string r = "\uFFFD";
  // One U+FFFD per maximal ill-formed subpart (Unicode ch. 3, "U+FFFD Substitution of Maximal Subparts").
  EXPECT_EQ(tok.encode("a\xFF" "b"), tok.encode("a" + r + "b"));
  EXPECT_EQ(tok.encode("\xE4\xBD"), tok.encode(r));                 // cut 3-byte sequence: one
  EXPECT_EQ(tok.encode("\xF0\x80\x80"), tok.encode(r + r + r));     // overlong lead: each byte
  EXPECT_EQ(tok.encode("\xED\xA0\x80x"), tok.encode(r + r + r + "x"));  // surrogate
  EXPECT_EQ(tok.encode("\xC0\xAF"), tok.encode(r + r));
  EXPECT_EQ(tok.decode(tok.encode("ok\x80")), "ok" + r);
}

// ---- hand-built tokenizers --------------------------------------------------------------

namespace {

// GPT-2's byte-to-character map, from its definition: printable bytes stand for themselves,
// the others take U+0100.. in byte order.
std::string byte_char(int b) {
  auto printable = [](int c) { return (c >= 0x21 && c <= 0x7E) || (c >= 0xA1 && c <= 0xAC) || c >= 0xAE; };
  uint32_t cp = static_cast<uint32_t>(b);
  if (!printable(b)) {
    cp = 256;
    for (int c = 0; c < b; ++c) cp += !printable(c);
  }
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

// Bytes as ids 0..255; merges (in rank order) add ids 256, 257, ...
json tiny_tokenizer(const std::vector<std::pair<std::string, std::string>>& merges, bool ignore_merges = false) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_char(b)] = b;
  json m = json::array();
  int next = 256;
  for (const auto& [a, b] : merges) {
    if (!vocab.contains(a + b)) vocab[a + b] = next++;
    m.push_back(json::array({a, b}));
  }
  json j;
  j["version"] = "1.0";
  j["added_tokens"] = json::array();
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
  j["decoder"] = {{"type", "ByteLevel"}};
  j["model"] = {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"ignore_merges", ignore_merges},
                {"vocab", vocab}, {"merges", m}};
  return j;
}

Tokenizer load_json(const json& j, const std::string& name = "tiny.json") {
  const std::string path = temp_dir().path + "/" + name;
  write_text(path, j.dump());
  return Tokenizer::load(path);
}

std::string load_error(const std::string& path) {
  try {
    Tokenizer::load(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

std::string load_error(const json& j, const std::string& name) {
  const std::string path = temp_dir().path + "/" + name;
  write_text(path, j.dump());
  return load_error(path);
}

}  // namespace

TEST(tokenizer_Rules, LowestRankMergesFirstLeftmostOnTies) {
  // ranks: (b,c)=0 -> 256 "bc", (a,b)=1 -> 257 "ab", (a,a)=2 -> 258 "aa", (ab,c)=3 -> 259
  const Tokenizer tok = load_json(tiny_tokenizer({{"b", "c"}, {"a", "b"}, {"a", "a"}, {"ab", "c"}}));
  EXPECT_EQ(tok.encode("abc"), (std::vector<int32_t>{'a', 256}));  // bc (rank 0) first; no (a, bc) merge
  EXPECT_EQ(tok.encode("ab"), (std::vector<int32_t>{257}));
  EXPECT_EQ(tok.encode("aaa"), (std::vector<int32_t>{258, 'a'}));  // the leftmost pair of equal rank
  EXPECT_EQ(tok.encode("aaaa"), (std::vector<int32_t>{258, 258}));
  EXPECT_EQ(tok.vocab_size(), 260);
  EXPECT_EQ(tok.encode("x y"), (std::vector<int32_t>{'x', 32, 'y'}));  // " y": no merge for (Ġ, y)
  EXPECT_EQ(tok.id_to_token(32), "\u0120");
  EXPECT_EQ(tok.decode({'x', 32, 'y'}), "x y");
  // A long word takes the heap path: (a,a) merges pair up the a's from the left.
  std::vector<int32_t> expect(100, 258);
  EXPECT_EQ(tok.encode(std::string(200, 'a')), expect);
  expect.push_back('a');
  EXPECT_EQ(tok.encode(std::string(201, 'a')), expect);
}

TEST(tokenizer_Rules, IgnoreMergesEmitsWholeVocabWords) {
  json j = tiny_tokenizer({{"a", "b"}});  // "ab" = 256
  j["model"]["vocab"]["abc"] = 300;        // reachable by no merge
  j["model"]["ignore_merges"] = false;
  EXPECT_EQ(load_json(j, "im0.json").encode("abc"), (std::vector<int32_t>{256, 'c'}));
  j["model"]["ignore_merges"] = true;
  EXPECT_EQ(load_json(j, "im1.json").encode("abc"), (std::vector<int32_t>{300}));
  EXPECT_EQ(load_json(j, "im1.json").encode("abcd"), (std::vector<int32_t>{256, 'c', 'd'}));
}

TEST(tokenizer_Rules, AddedTokenOptions) {
  json j = tiny_tokenizer({});
  j["added_tokens"] = json::array({
      {{"id", 300}, {"content", "<x>"}, {"special", true}, {"single_word", true}},
      {{"id", 301}, {"content", "<y>"}, {"special", false}, {"lstrip", true}, {"rstrip", true}},
      {{"id", 302}, {"content", "<y>>"}, {"special", false}},
  });
  const Tokenizer tok = load_json(j, "added.json");
  using V = std::vector<int32_t>;
  EXPECT_EQ(tok.encode("<x>"), V{300});
  EXPECT_EQ(tok.encode("a <x> b"), (V{'a', 32, 300, 32, 'b'}));
  EXPECT_EQ(tok.encode("a<x>"), (V{'a', '<', 'x', '>'}));  // single_word: 'a' touches it
  EXPECT_EQ(tok.encode("a  <y>  b"), (V{'a', 301, 'b'}));   // lstrip and rstrip eat the spaces
  EXPECT_EQ(tok.encode("<y>>"), V{302});                    // the longest match wins
  EXPECT_EQ(tok.decode({300, 'a', 301}), "<x>a<y>");
  EXPECT_EQ(tok.decode({300, 'a', 301}, true), "a<y>");    // only special ones are skipped
  EXPECT_EQ(tok.decode({'a', -5, 999999, 'b'}), "ab");     // unknown ids are skipped
  EXPECT_TRUE(tok.is_special(300));
  EXPECT_FALSE(tok.is_special(301));
  EXPECT_EQ(tok.vocab_size(), 303);
}

TEST(tokenizer_Rules, LoadsADirectoryHoldingTokenizerJson) {
  const std::string dir = temp_dir().path + "/model-dir";
  fs::create_directories(dir);
  write_text(dir + "/tokenizer.json", tiny_tokenizer({{"a", "b"}}).dump());
  EXPECT_EQ(Tokenizer::load(dir).encode("ab"), (std::vector<int32_t>{256}));
}

TEST(tokenizer_Errors, EachNamesTheFileAndTheProblem) {
  auto expect_error = [](const std::string& msg, const std::string& file, const std::string& what) {
    EXPECT_NE(msg.find(file), std::string::npos) << "message does not name " << file << ": " << msg;
    EXPECT_NE(msg.find(what), std::string::npos) << "message does not say " << what << ": " << msg;
  };
  const std::string dir = temp_dir().path;
  expect_error(load_error(dir + "/missing.json"), "missing.json", "cannot open");
  write_text(dir + "/bad.json", "{\"model\": {\"type\": \"BPE\", ");
  expect_error(load_error(dir + "/bad.json"), "bad.json", "not valid JSON");

  json j = tiny_tokenizer({});
  j["model"]["type"] = "WordPiece";
  expect_error(load_error(j, "wordpiece.json"), "wordpiece.json", "model.type \"WordPiece\" is not supported");

  j = tiny_tokenizer({});
  j["normalizer"] = {{"type", "NFKC"}};
  expect_error(load_error(j, "nfkc.json"), "nfkc.json", "normalizer.type \"NFKC\" is not supported");
  j["normalizer"] = {{"type", "Sequence"}, {"normalizers", json::array({{{"type", "NFC"}}, {{"type", "Lowercase"}}})}};
  expect_error(load_error(j, "seq.json"), "seq.json", "normalizer.normalizers[1].type \"Lowercase\"");
  j["normalizer"] = {{"type", "Sequence"}, {"normalizers", json::array({{{"type", "NFC"}}})}};
  EXPECT_EQ(load_error(j, "seq-nfc.json"), "(no error)");

  j = tiny_tokenizer({});
  j["pre_tokenizer"] = {{"type", "Sequence"},
                        {"pretokenizers", json::array({{{"type", "Digits"}, {"individual_digits", true}},
                                                       {{"type", "ByteLevel"}, {"use_regex", false}}})}};
  expect_error(load_error(j, "digits.json"), "digits.json", "pre_tokenizer.pretokenizers[0].type \"Digits\"");
  j["pre_tokenizer"] = {{"type", "Metaspace"}};
  expect_error(load_error(j, "meta.json"), "meta.json", "pre_tokenizer.type \"Metaspace\"");
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "\\s+"}}}, {"behavior", "Removed"}, {"invert", false}};
  expect_error(load_error(j, "removed.json"), "removed.json", "behavior \"Removed\"");
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}, {"invert", false}};
  expect_error(load_error(j, "regex.json"), "regex.json", "cannot compile the regex");
  j["pre_tokenizer"] = nullptr;
  expect_error(load_error(j, "nopre.json"), "nopre.json", "no ByteLevel");

  j = tiny_tokenizer({{"a", "b"}});
  j["model"]["merges"][0] = json::array({"a", "zz"});
  expect_error(load_error(j, "merge.json"), "merge.json", "model.merges[0]: \"zz\" is not in model.vocab");
  j["model"]["merges"][0] = "a b c";
  expect_error(load_error(j, "merge2.json"), "merge2.json", "model.merges[0]");
  j = tiny_tokenizer({});
  j["model"]["vocab"].erase(byte_char(0x41));
  expect_error(load_error(j, "bytes.json"), "bytes.json", "no token for byte 0x41");
  j = tiny_tokenizer({});
  j["decoder"] = {{"type", "WordPiece"}};
  expect_error(load_error(j, "dec.json"), "dec.json", "decoder.type \"WordPiece\"");
  j = tiny_tokenizer({});
  j["model"].erase("vocab");
  expect_error(load_error(j, "novocab.json"), "novocab.json", "model.vocab");
}

TEST(tokenizer_Rules, OlderMergeFormatGivesTheSameTokenizer) {
  json a = tiny_tokenizer({{"b", "c"}, {"a", "b"}, {"a", "a"}, {"ab", "c"}});
  json b = a;
  for (auto& m : b["model"]["merges"]) m = m[0].get<std::string>() + " " + m[1].get<std::string>();
  const Tokenizer ta = load_json(a, "fmt-a.json"), tb = load_json(b, "fmt-b.json");
  for (const char* s : {"abc", "aaab", "abcabc aab"}) EXPECT_EQ(ta.encode(s), tb.encode(s)) << s;
}

// \s is Unicode White_Space, as in the Oniguruma regexes of Hugging Face tokenizers: U+0085
// (NEXT LINE) is whitespace and U+FEFF is not. (JavaScript's \s has it the other way round,
// so the parity inputs avoid these two; see tools/tokref/README.md.)
TEST(tokenizer_Rules, RegexWhitespaceIsUnicodeWhiteSpace) {
  json j = tiny_tokenizer({});
  j["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers",
       json::array({{{"type", "Split"},
                     {"pattern", {{"Regex", R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"}}},
                     {"behavior", "Isolated"},
                     {"invert", false}},
                    {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}})}};
  const Tokenizer tok = load_json(j, "ws.json");
  using S = std::vector<std::string>;
  // whitespace: \s+(?!\S) leaves the last one to prefix the word
  EXPECT_EQ(tok.pre_tokenize("\u0085\u0085x"), (S{"\u0085", "\u0085x"}));
  EXPECT_EQ(tok.pre_tokenize("  x"), (S{" ", " x"}));
  // not whitespace: a run of "other" characters, then the word
  EXPECT_EQ(tok.pre_tokenize("\uFEFF\uFEFFx"), (S{"\uFEFF\uFEFF", "x"}));
  EXPECT_EQ(tok.pre_tokenize("!!x"), (S{"!!", "x"}));
}
