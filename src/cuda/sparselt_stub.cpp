// Builds without cuSPARSELt (CI, machines without it): the sparse core and the handle
// functions exist and say clearly why they cannot work.
#ifndef SPENSE_HAVE_CUSPARSELT

#include "gemm_core.h"

namespace spense::cuda {

bool have_cusparselt() { return false; }
std::string cusparselt_version() { return "not built with cuSPARSELt"; }
void* sparselt_handle_create() { return nullptr; }
void sparselt_handle_destroy(void*) {}

std::unique_ptr<SparseCore> make_sparse_core(Context&, const GemmShape& shape, bool) {
  throw Error("layer '" + shape.name +
                  "': 2:4 sparse layers need cuSPARSELt, and this build has none (configure with "
                  "-DCUSPARSELT_ROOT=<prefix holding include/cusparseLt.h and lib/libcusparseLt.so*>)",
              2);
}

}  // namespace spense::cuda

#endif  // SPENSE_HAVE_CUSPARSELT
