// The small-M kernel's tensor-core shapes 0-5 on E4M3 weights and BF16 tokens (gemv_tc.cuh).
#include "cuda/gemv_tc.cuh"

namespace spense::cuda::gemv::detail {

void launch_tc_fp8(int v, const Weights& w, const void* x, int64_t ldx, int64_t m, void* y, int64_t ldy,
                   cudaStream_t s) {
  launch_tc_plain<true>(v, w, x, ldx, m, y, ldy, s);
}

}  // namespace spense::cuda::gemv::detail
