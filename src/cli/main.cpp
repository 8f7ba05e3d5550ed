// spense: command-line entry point. Subcommands register themselves (commands.h).
#include <cstdio>
#include <exception>

#include "cli/commands.h"
#include "model/ops.h"
#include "spense/error.h"

int main(int argc, char** argv) {
  spense::ops::use_fast_blas_kernels(argv);  // may restart the process (see ops.h)
  CLI::App app{"spense: one-shot 2:4 + dense hybrid pruning of LLMs, and fast GPU inference"};
  app.require_subcommand(1);
  app.set_version_flag("--version", [] {
    std::string v = "spense: " + spense::ops::blas_description();
#ifdef SPENSE_HAVE_CUDA
    v += "; built with CUDA";
#else
    v += "; built without CUDA";
#endif
    return v;
  }, "Print the BLAS in use (library, kernels, threads) and whether CUDA is built in, then exit");
  spense::cli::register_inspect(app);
  spense::cli::register_ppl(app);
  spense::cli::register_logits(app);
  spense::cli::register_synth(app);
  spense::cli::register_prune(app);
  spense::cli::register_eval(app);
  spense::cli::register_generate(app);
#ifdef SPENSE_HAVE_CUDA
  spense::cli::register_bench_gemm(app);
  spense::cli::register_bench_decode(app);
  spense::cli::register_bench_prune(app);
#endif
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // Bad flags exit with 2 like every other input error; --help exits 0.
    int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  } catch (const spense::Error& e) {
    std::fprintf(stderr, "spense: error: %s\n", e.what());
    return e.exit_code();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "spense: internal error: %s\n", e.what());
    return 1;
  }
  return 0;
}
