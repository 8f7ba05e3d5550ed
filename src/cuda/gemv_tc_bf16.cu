// The small-M kernel's tensor-core shapes 0-5 on BF16 weights (gemv_tc.cuh).
#include "cuda/gemv_tc.cuh"

namespace spense::cuda::gemv::detail {

void launch_tc_bf16(int v, const Weights& w, const void* x, int64_t ldx, int64_t m, void* y, int64_t ldy,
                    cudaStream_t s) {
  launch_tc_plain<false>(v, w, x, ldx, m, y, ldy, s);
}

}  // namespace spense::cuda::gemv::detail
