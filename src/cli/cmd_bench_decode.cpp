// `spense bench-decode`: end-to-end decode speed of dense / 2:4 / Spense models on the GPU
// engine (src/engine/gpu/bench_decode.cpp does the work and parses the flags, so the
// standalone spense_bench_decode takes exactly the same ones).
#ifdef SPENSE_HAVE_CUDA

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "spense/cuda/bench.h"

namespace spense::cli {

void register_bench_decode(CLI::App& app) {
  auto* cmd = app.add_subcommand("bench-decode",
                                 "GPU decode benchmark: tokens/s, ms per step and roofline fraction of dense, 2:4 "
                                 "and Spense models (a checkpoint or --synthetic shapes). Flags: --help");
  cmd->prefix_command();        // every argument goes to the shared parser below
  cmd->set_help_flag();         // ... --help included, which prints the parser's usage
  cmd->callback([cmd] {
    cuda::BenchDecodeOptions o;
    if (!cuda::parse_bench_decode_args(cmd->remaining(), &o)) {
      std::fputs(cuda::bench_decode_usage().c_str(), stdout);
      return;
    }
    cuda::run_bench_decode(o);
  });
}

}  // namespace spense::cli

#endif  // SPENSE_HAVE_CUDA
