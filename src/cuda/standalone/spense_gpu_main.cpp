// spense_gpu: the GPU engine's commands for machines that build only the GPU parts
// (src/cuda/standalone/CMakeLists.txt; no tokenizer or BLAS there):
//   spense_gpu bench-decode ...   the same flags and code as `spense bench-decode`
//   spense_gpu bench-prune ...    the same flags and code as `spense bench-prune` (built when
//                                 OpenBLAS and LAPACKE are found)
//   spense_gpu generate --model DIR --ids 1,2,3 [--max-new-tokens N] [--dtype bf16|fp8]
//              [--format auto|dense|24|spense] [--batch-copies B]
//     greedy continuation of token ids (B copies of the prompt in one batch); prints the ids.
// Exit codes: 0 ok, 2 bad input, 1 device failure.
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

#include "spense/cuda/bench.h"
#include "spense/cuda/engine.h"
#include "spense/error.h"
#ifdef SPENSE_GPU_PRUNE
#include "spense/cuda/prune_gpu.h"
#endif

namespace {

int generate_ids(const std::vector<std::string>& args) {
  using namespace spense;
  std::string model, ids, dtype = "bf16", format = "auto";
  int64_t n = 32, copies = 1;
  auto count = [](const std::string& flag, const std::string& v) { return cuda::bench_count("generate", flag, v); };
  for (size_t i = 0; i < args.size(); ++i) {
    std::string k, v;
    cuda::bench_next_flag(args, i, true, "generate", &k, &v);
    if (k == "--model") model = v;
    else if (k == "--ids") ids = v;
    else if (k == "--max-new-tokens") n = count(k, v);
    else if (k == "--dtype") dtype = v;
    else if (k == "--format") format = v;
    else if (k == "--batch-copies") copies = count(k, v);
    else throw Error("generate: unknown flag '" + k + "'");
  }
  if (model.empty() || ids.empty()) throw Error("generate: --model and --ids are required");
  if (dtype != "bf16" && dtype != "fp8") throw Error("generate: --dtype must be bf16 or fp8, got '" + dtype + "'");
  std::vector<int32_t> prompt;
  for (const std::string& t : cuda::bench_split_list(ids)) {
    const double d = cuda::bench_number("generate", "--ids", t);  // the engine checks the vocabulary bound
    if (d < 0 || d != static_cast<int32_t>(d)) throw Error("generate: --ids: '" + t + "' is not a token id");
    prompt.push_back(static_cast<int32_t>(d));
  }
  cuda::Context ctx;
  cuda::EngineOptions eo;
  eo.precision = dtype == "fp8" ? cuda::LinearPrecision::FP8 : cuda::LinearPrecision::BF16;
  if (!weight_format_parse(format, &eo.plan.format)) throw Error("generate: unknown format '" + format + "'");
  eo.max_batch = copies;
  eo.max_ctx = static_cast<int64_t>(prompt.size()) + n + 8;
  auto e = cuda::Engine::load(ctx, model, eo);
  std::fputs(e->describe().c_str(), stderr);
  cuda::GenerateOptions g;
  g.max_new_tokens = n;
  const auto out = cuda::generate(*e, std::vector<std::vector<int32_t>>(static_cast<size_t>(copies), prompt), g);
  for (const auto& row : out) {
    for (size_t i = 0; i < row.size(); ++i) std::printf("%s%d", i ? "," : "", row[i]);
    std::printf("\n");
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  try {
    if (args.empty()) throw spense::Error("usage: spense_gpu bench-decode|bench-prune|generate ...");
    const std::string cmd = args[0];
    args.erase(args.begin());
#ifdef SPENSE_GPU_PRUNE
    if (cmd == "bench-prune") {
      spense::cuda::BenchPruneOptions o;
      if (!spense::cuda::parse_bench_prune_args(args, &o)) {
        std::fputs(spense::cuda::bench_prune_usage().c_str(), stdout);
        return 0;
      }
      spense::cuda::run_bench_prune(o);
      return 0;
    }
#endif
    if (cmd == "bench-decode") {
      spense::cuda::BenchDecodeOptions o;
      if (!spense::cuda::parse_bench_decode_args(args, &o)) {
        std::fputs(spense::cuda::bench_decode_usage().c_str(), stdout);
        return 0;
      }
      spense::cuda::run_bench_decode(o);
      return 0;
    }
    if (cmd == "generate") return generate_ids(args);
    throw spense::Error("unknown command '" + cmd + "' (bench-decode, generate)");
  } catch (const spense::Error& e) {
    std::fprintf(stderr, "spense_gpu: error: %s\n", e.what());
    return e.exit_code();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "spense_gpu: internal error: %s\n", e.what());
    return 1;
  }
}
