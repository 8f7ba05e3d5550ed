// `spense bench-prune`: time the pruning pipeline on random weights of a real model's shapes
// (src/cuda/prune/bench_prune.cpp parses the flags and does the work, so the standalone
// spense_gpu bench-prune takes exactly the same ones).
#ifdef SPENSE_HAVE_CUDA

#include <cstdio>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "spense/cuda/prune_gpu.h"

namespace spense::cli {

void register_bench_prune(CLI::App& app) {
  auto* cmd = app.add_subcommand("bench-prune",
                                 "Pruning speed on the GPU (or CPU): a random-weight model of a preset's shapes "
                                 "pruned block by block, seconds per block, extrapolated total, peak memory. "
                                 "Flags: --help");
  cmd->prefix_command();
  cmd->set_help_flag();
  cmd->callback([cmd] {
    cuda::BenchPruneOptions o;
    if (!cuda::parse_bench_prune_args(cmd->remaining(), &o)) {
      std::fputs(cuda::bench_prune_usage().c_str(), stdout);
      return;
    }
    cuda::run_bench_prune(o);
  });
}

}  // namespace spense::cli

#endif  // SPENSE_HAVE_CUDA
