// Each subcommand lives in src/cli/cmd_<name>.cpp and registers itself on the app with a
// callback; callbacks throw spense::Error on bad input and main() turns that into one line
// on stderr and the error's exit code (2 for bad input).
#pragma once
#include <CLI/CLI.hpp>

namespace spense::cli {

void register_inspect(CLI::App& app);
void register_ppl(CLI::App& app);
void register_logits(CLI::App& app);
void register_synth(CLI::App& app);
void register_prune(CLI::App& app);  // src/cli/cmd_prune.cpp
void register_eval(CLI::App& app);   // src/cli/cmd_eval.cpp
void register_generate(CLI::App& app);  // src/cli/cmd_generate.cpp (GPU engine or CPU reference)
#ifdef SPENSE_HAVE_CUDA
void register_bench_gemm(CLI::App& app);    // src/cli/cmd_bench_gemm.cpp (GPU runtime)
void register_bench_decode(CLI::App& app);  // src/cli/cmd_bench_decode.cpp (GPU engine)
void register_bench_prune(CLI::App& app);   // src/cli/cmd_bench_prune.cpp (GPU pruning)
#endif

}  // namespace spense::cli
