// Scoped OpenBLAS thread count, header-only: for translation units that link BLAS (spense_blas),
// i.e. the model and prune concerns.
#pragma once
#include <cblas.h>

namespace spense {

// Sets OpenBLAS to n threads for the scope's duration, then restores the previous setting.
// Construct it on the calling thread, outside OpenMP regions (the setting is global).
class BlasThreads {
 public:
  explicit BlasThreads(int n) : prev_(openblas_get_num_threads()) {
    if (n != prev_) openblas_set_num_threads(n);
  }
  ~BlasThreads() {
    if (openblas_get_num_threads() != prev_) openblas_set_num_threads(prev_);
  }
  BlasThreads(const BlasThreads&) = delete;
  BlasThreads& operator=(const BlasThreads&) = delete;

 private:
  int prev_;
};

}  // namespace spense
