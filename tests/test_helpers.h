// Helpers shared by the test executables: a per-process scratch directory, file slurp/spit,
// running the built `spense` binary (path in the SPENSE_CLI define) with its exit code and
// both output streams, a tiny Qwen3 with calibration text made through it, and an independent
// magnitude 2:4 reference.
#pragma once
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace spense::test_util {

namespace fs = std::filesystem;

// One scratch directory per test process (named after the test), removed at exit.
struct ScratchDir {
  fs::path path;
  explicit ScratchDir(const std::string& name) {
    path = fs::temp_directory_path() / ("spense_test_" + name + "_" + std::to_string(getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

inline std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

inline void spit(const fs::path& p, const std::string& s) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f << s;
}

inline std::string quote(const std::string& s) { return "'" + s + "'"; }

struct CliResult {
  int code = -1;
  std::string out, err;
};

#ifdef SPENSE_CLI
// Run `spense <args>` (args already shell-quoted); stderr goes through a file in scratch.
inline CliResult run_cli(const std::string& args, const fs::path& scratch) {
  static int n = 0;
  const fs::path err_file = scratch / ("stderr_" + std::to_string(n++));
  const std::string cmd = std::string(SPENSE_CLI) + " " + args + " 2>" + quote(err_file.string());
  CliResult r;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf;
  size_t got;
  while ((got = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), got);
  const int status = pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.err = slurp(err_file);
  return r;
}

// A tiny Qwen3 checkpoint (`spense synth`, the real Qwen3 tokenizer at `tokenizer`) at
// dir/model_name, and the Brown corpus file `brown` as plain text (tags stripped, "word/tag" ->
// "word", as scripts/example.sh does) at dir/brown.txt. Returns false, writing nothing, when
// either reference file is missing (scripts/fetch_refs.sh); otherwise *model and *text are set
// and *synth is the synth run, for the caller to check.
inline bool make_tiny_qwen3(const fs::path& dir, const std::string& model_name, const std::string& tokenizer,
                            const std::string& brown, std::string* model, std::string* text, CliResult* synth) {
  if (!fs::exists(tokenizer) || !fs::exists(brown)) return false;
  *model = (dir / model_name).string();
  *synth = run_cli("synth --arch qwen3 --preset tiny --max-position 128 --tokenizer " + quote(tokenizer) +
                       " --out " + quote(*model),
                   dir);
  std::istringstream in(slurp(brown));
  std::string word, plain;
  while (in >> word) plain += word.substr(0, word.rfind('/')) + " ";
  *text = (dir / "brown.txt").string();
  spit(*text, plain);
  return true;
}
#endif

// Independent magnitude 2:4: per group of 4 along K keep the 2 largest |w| (ties: lower index).
inline std::vector<float> magnitude24(const std::vector<float>& w) {
  std::vector<float> out(w.size(), 0.0f);
  for (size_t g = 0; g < w.size(); g += 4) {
    int idx[4] = {0, 1, 2, 3};
    std::stable_sort(idx, idx + 4, [&](int a, int b) { return std::abs(w[g + a]) > std::abs(w[g + b]); });
    out[g + idx[0]] = w[g + idx[0]];
    out[g + idx[1]] = w[g + idx[1]];
  }
  return out;
}

}  // namespace spense::test_util
