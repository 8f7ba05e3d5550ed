// The small-M kernel's E4M3-token shapes 6-9: wgmma warpgroups multiplying E4M3 weights by
// E4M3 tokens (gemv_tc.cuh; the shapes are described above launch_tc_plain there).
#include "cuda/gemv_tc.cuh"

namespace spense::cuda::gemv::detail {

void launch_tc_e4m3(int v, const Weights& w, const void* x, int64_t ldx, int64_t m, void* y, int64_t ldy,
                    cudaStream_t s) {
  if (m <= 8) {
    if (v == 6) launch_tc_q<1, 1, 4, 6>(w, x, ldx, m, y, ldy, s);
    else if (v == 7) launch_tc_q<2, 1, 8, 4>(w, x, ldx, m, y, ldy, s);
    else if (v == 8) launch_tc_q<1, 1, 8, 4>(w, x, ldx, m, y, ldy, s);
    else launch_tc_q<1, 1, 4, 3>(w, x, ldx, m, y, ldy, s);
  } else if (m <= 16) {
    if (v == 6) launch_tc_q<1, 2, 4, 6>(w, x, ldx, m, y, ldy, s);
    else if (v == 7) launch_tc_q<2, 2, 8, 4>(w, x, ldx, m, y, ldy, s);
    else if (v == 8) launch_tc_q<1, 2, 8, 4>(w, x, ldx, m, y, ldy, s);
    else launch_tc_q<1, 2, 4, 3>(w, x, ldx, m, y, ldy, s);
  } else if (m <= 32) {
    if (v == 6) launch_tc_q<1, 4, 4, 5>(w, x, ldx, m, y, ldy, s);
    else if (v == 7) launch_tc_q<2, 4, 8, 4>(w, x, ldx, m, y, ldy, s);
    else if (v == 8) launch_tc_q<1, 4, 8, 3>(w, x, ldx, m, y, ldy, s);
    else launch_tc_q<1, 4, 4, 3>(w, x, ldx, m, y, ldy, s);
  } else {
    if (v == 6) launch_tc_q<1, 8, 4, 4>(w, x, ldx, m, y, ldy, s);
    else if (v == 7) launch_tc_q<2, 8, 8, 3>(w, x, ldx, m, y, ldy, s);
    else if (v == 8) launch_tc_q<1, 8, 8, 2>(w, x, ldx, m, y, ldy, s);
    else launch_tc_q<1, 8, 4, 2>(w, x, ldx, m, y, ldy, s);
  }
}

}  // namespace spense::cuda::gemv::detail
