// The 2:4 choice shared by the CPU OBS pass, the baselines and the GPU kernels (nvcc
// compiles it for the device too), so every path breaks ties the same way.
#pragma once

#ifdef __CUDACC__
#define SPENSE_HOST_DEVICE __host__ __device__
#else
#define SPENSE_HOST_DEVICE
#endif

namespace spense::detail {

// Keep the 2 largest of 4 saliencies (ties: the lower position is kept). Returns a 4-bit keep mask.
template <class T>
SPENSE_HOST_DEVICE inline unsigned keep2of4(const T s[4]) {
  unsigned keep = 0;
  for (int k = 0; k < 4; ++k) {
    int rank = 0;  // how many positions beat k
    for (int m = 0; m < 4; ++m) rank += (s[m] > s[k]) || (s[m] == s[k] && m < k);
    if (rank < 2) keep |= 1u << k;
  }
  return keep;
}

}  // namespace spense::detail
