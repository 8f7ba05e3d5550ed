// Tokenizer throughput: the tag-stripped Brown corpus through the real Qwen3 tokenizer.
//
//   bench_tokenizer [--refs DIR] [--reps N]
//
// DIR defaults to $SPENSE_REFS, else the .refs/ of the source tree this was built from.
// Prints the load time, then MB/s for encode (cold: the word cache emptied first; warm: the
// cache filled by an earlier pass) over the whole corpus, one encode() per document, and
// for decode; by wall time and by process CPU time (the two differ on a busy machine).
// Single-threaded. Needs the references of scripts/fetch_refs.sh.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "spense/error.h"
#include "spense/tokenizer.h"

namespace fs = std::filesystem;

namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Process CPU time: on a shared machine it shows the cost without the time spent waiting.
double cpu_now() { return static_cast<double>(std::clock()) / CLOCKS_PER_SEC; }

// Best wall and CPU seconds of one timed step.
struct Timing {
  double wall = 1e30, cpu = 1e30;
  template <class F>
  void run(F&& f) {
    const double w0 = now(), c0 = cpu_now();
    f();
    wall = std::min(wall, now() - w0);
    cpu = std::min(cpu, cpu_now() - c0);
  }
};

// "word/tag" -> "word" for every whitespace-separated token; whitespace kept.
std::string strip_tags(const std::string& tagged) {
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
    const size_t slash = tagged.rfind('/', j - 1);
    out.append(tagged, i, (slash != std::string::npos && slash > i ? slash : j) - i);
    i = j;
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::string refs = std::getenv("SPENSE_REFS") ? std::getenv("SPENSE_REFS")
                                                : (fs::path(__FILE__).parent_path().parent_path() / ".refs").string();
  int reps = 3;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--refs") && i + 1 < argc) {
      refs = argv[++i];
    } else if (!std::strcmp(argv[i], "--reps") && i + 1 < argc) {
      reps = std::max(1, std::atoi(argv[++i]));
    } else {
      std::fprintf(stderr, "usage: %s [--refs DIR] [--reps N]\n", argv[0]);
      return 2;
    }
  }
  try {
    std::vector<std::string> names;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(refs + "/brown", ec)) {
      const std::string n = e.path().filename().string();
      if (n.size() == 4 && n[0] == 'c' && std::isdigit(static_cast<unsigned char>(n[2]))) names.push_back(n);
    }
    if (names.empty()) throw spense::Error(refs + "/brown: no Brown corpus files; run scripts/fetch_refs.sh");
    std::sort(names.begin(), names.end());
    std::vector<std::string> docs;
    size_t bytes = 0;
    for (const auto& n : names) {
      std::ifstream in(refs + "/brown/" + n, std::ios::binary);
      std::ostringstream ss;
      ss << in.rdbuf();
      docs.push_back(strip_tags(ss.str()));
      bytes += docs.back().size();
    }
    const double mb = static_cast<double>(bytes) / 1e6;

    double t0 = now();
    const spense::Tokenizer tok = spense::Tokenizer::load(refs + "/qwen3/tokenizer.json");
    std::printf("load %s: %.3f s (vocab %lld)\n", (refs + "/qwen3/tokenizer.json").c_str(), now() - t0,
                static_cast<long long>(tok.vocab_size()));
    std::printf("Brown corpus: %zu documents, %.2f MB\n", docs.size(), mb);

    size_t ids = 0;
    Timing cold, warm, dec;
    std::vector<std::vector<int32_t>> enc(docs.size());
    for (int r = 0; r < reps; ++r) {
      tok.clear_cache();
      cold.run([&] {
        for (size_t i = 0; i < docs.size(); ++i) enc[i] = tok.encode(docs[i]);
      });
      warm.run([&] {
        ids = 0;
        for (size_t i = 0; i < docs.size(); ++i) {
          enc[i] = tok.encode(docs[i]);
          ids += enc[i].size();
        }
      });
      size_t out = 0;
      dec.run([&] {
        for (const auto& e : enc) out += tok.decode(e).size();
      });
      if (out != bytes) throw spense::Error("decode(encode(x)) changed the size of the corpus", 1);
    }
    auto line = [&](const char* what, const Timing& t) {
      std::printf("%-18s %8.1f MB/s wall (%.3f s)  %8.1f MB/s cpu (%.3f s)\n", what, mb / t.wall, t.wall,
                  mb / t.cpu, t.cpu);
    };
    line("encode cold cache:", cold);
    line("encode warm cache:", warm);
    line("decode:", dec);
    std::printf("%zu ids, %.2f bytes/id; best of %d runs\n", ids, static_cast<double>(bytes) / static_cast<double>(ids),
                reps);
  } catch (const spense::Error& e) {
    std::fprintf(stderr, "bench_tokenizer: %s\n", e.what());
    return e.exit_code();
  }
  return 0;
}
