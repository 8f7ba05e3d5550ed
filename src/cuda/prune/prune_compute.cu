// The GPU PruneCompute (spense/cuda/prune_gpu.h). Everything runs on the legacy stream with
// synchronous copies: each call moves its operands to the device, computes, and copies the
// results back, so the host-side logic of prune_layer is untouched.
//  - inverse_factor: the CPU route (spense/prune.h) with cuSOLVER: Dpotrf on the reversed,
//    damped H, then Xtrtri; the damping retries are decided here from potrf's info.
//  - obs_prune: per column block of at most 128 columns, one warp per row runs the block
//    column by column with the row segment in registers (rows are independent), then one
//    GEMM applies the block's scaled errors to all later columns. The block width does not
//    change the result (lazy batching is exact), only the rounding.
//  - quad_form_rows: C = V H by GEMM in row chunks, then a dot product.
#include <algorithm>
#include <atomic>
#include <string>
#include <type_traits>
#include <vector>

#include "cuda/prune/gpu_common.h"
#include "cuda/reduce.cuh"
#include "prune/keep24.h"
#include "prune/obs.h"
#include "spense/cuda/prune_gpu.h"
#include "spense/error.h"

namespace spense::cuda {

namespace {
std::atomic<uint64_t> g_peak{0};
constexpr int kObsBlock = 128;  // columns per in-block kernel launch (4 per lane)
}  // namespace

const char* cusolver_status_name(cusolverStatus_t s) {
  switch (s) {
    case CUSOLVER_STATUS_SUCCESS: return "CUSOLVER_STATUS_SUCCESS";
    case CUSOLVER_STATUS_NOT_INITIALIZED: return "CUSOLVER_STATUS_NOT_INITIALIZED";
    case CUSOLVER_STATUS_ALLOC_FAILED: return "CUSOLVER_STATUS_ALLOC_FAILED";
    case CUSOLVER_STATUS_INVALID_VALUE: return "CUSOLVER_STATUS_INVALID_VALUE";
    case CUSOLVER_STATUS_ARCH_MISMATCH: return "CUSOLVER_STATUS_ARCH_MISMATCH";
    case CUSOLVER_STATUS_EXECUTION_FAILED: return "CUSOLVER_STATUS_EXECUTION_FAILED";
    case CUSOLVER_STATUS_INTERNAL_ERROR: return "CUSOLVER_STATUS_INTERNAL_ERROR";
    case CUSOLVER_STATUS_NOT_SUPPORTED: return "CUSOLVER_STATUS_NOT_SUPPORTED";
    default: return "CUSOLVER_STATUS_(other)";
  }
}

void note_device_memory() {
  size_t free_b = 0, total_b = 0;
  if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) return;
  const uint64_t used = uint64_t(total_b - free_b);
  uint64_t prev = g_peak.load();
  while (used > prev && !g_peak.compare_exchange_weak(prev, used)) {
  }
}

uint64_t gpu_prune_peak_bytes() { return g_peak.load(); }

std::string gpu_device_name() {
  int dev = 0;
  SPENSE_CUDA_CHECK(cudaGetDevice(&dev));
  cudaDeviceProp p{};
  SPENSE_CUDA_CHECK(cudaGetDeviceProperties(&p, dev));
  return p.name;
}

BlasHandle::BlasHandle() {
  SPENSE_CUDA_CHECK(cublasCreate(&h_));
  if (cublasSetMathMode(h_, CUBLAS_DEFAULT_MATH) != CUBLAS_STATUS_SUCCESS) {
    cublasDestroy(h_);
    throw Error("cuBLAS: cublasSetMathMode(CUBLAS_DEFAULT_MATH) failed", 1);
  }
}
BlasHandle::~BlasHandle() {
  if (h_) cublasDestroy(h_);
}

namespace {

std::string tag(const std::string& layer) {
  return "layer '" + (layer.empty() ? std::string("?") : layer) + "'";
}

// A = J (H + diag(lambda + dead)) J, row-major K x K.
__global__ void reverse_damp_kernel(const double* __restrict__ H, double* __restrict__ A, int64_t K,
                                    double lambda, const uint8_t* __restrict__ dead) {
  const int64_t n = K * K;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < n; idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = idx / K, j = idx - i * K;
    double a = H[(K - 1 - i) * K + (K - 1 - j)];
    if (i == j) a += lambda + (dead[K - 1 - i] ? 1.0 : 0.0);
    A[idx] = a;
  }
}

// U[i][j] = A[K-1-i][K-1-j] for j >= i (the factor sits in A's row-major lower triangle), 0 below.
__global__ void reverse_upper_kernel(const double* __restrict__ A, double* __restrict__ U, int64_t K) {
  const int64_t n = K * K;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < n; idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = idx / K, j = idx - i * K;
    U[idx] = j >= i ? A[(K - 1 - i) * K + (K - 1 - j)] : 0.0;
  }
}

template <class T>
__global__ void diag_kernel(const T* __restrict__ U, T* __restrict__ d, int64_t K) {
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < K; j += int64_t(gridDim.x) * blockDim.x)
    d[j] = U[j * K + j];
}

// One column block [i1, i1 + bw), bw <= 128, of the OBS pass; one warp per row, lane l owns
// the block's columns l, l+32, l+64, l+96. Mirrors row_block_impl() in src/prune/obs.cpp:
// at each group start the 2:4 mask is chosen from the updated weights by w^2 / U_jj^2;
// err = (w - q) / U_jj goes to E (row-major N x bw) and to the later columns of the block.
// Each row belongs to one warp, so err_row needs no atomics; err_col is summed from E after.
template <class T>
__global__ void __launch_bounds__(256) obs_block_kernel(T* __restrict__ W, int64_t N, int64_t K,
                                                        const T* __restrict__ U, const T* __restrict__ ud,
                                                        const uint8_t* __restrict__ prunable, int64_t i1, int bw,
                                                        T* __restrict__ E, double* __restrict__ err_row,
                                                        unsigned long long* __restrict__ updates) {
  __shared__ unsigned long long upd_acc;
  if (threadIdx.x == 0) upd_acc = 0;
  __syncthreads();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  const unsigned full = 0xffffffffu;
  T ud_own[4];
#pragma unroll
  for (int s = 0; s < 4; ++s) {
    const int c = lane + 32 * s;
    ud_own[s] = c < bw ? ud[i1 + c] : T(1);
  }
  for (int64_t r = int64_t(blockIdx.x) * warps + warp; r < N; r += int64_t(gridDim.x) * warps) {
    T* w = W + r * K + i1;
    T v[4];
#pragma unroll
    for (int s = 0; s < 4; ++s) {
      const int c = lane + 32 * s;
      v[s] = c < bw ? w[c] : T(0);
    }
    double es = 0;
    unsigned long long upd = 0;
    unsigned keep = 0xf;
#pragma unroll
    for (int s = 0; s < 4; ++s) {
      if (32 * s >= bw) break;
      for (int il = 0; il < 32; ++il) {
        const int i = 32 * s + il;
        if (i >= bw) break;
        if ((i & 3) == 0) {
          if (prunable[i1 + i]) {
            const T mine = v[s] * v[s] / (ud_own[s] * ud_own[s]);
            T sal[4];
#pragma unroll
            for (int k = 0; k < 4; ++k) sal[k] = __shfl_sync(full, mine, il + k);
            keep = detail::keep2of4(sal);
          } else {
            keep = 0xf;
          }
        }
        const T wi = __shfl_sync(full, v[s], il);
        const T q = ((keep >> (i & 3)) & 1u) ? wi : T(0);
        const T err = (wi - q) / ud[i1 + i];
        if (lane == il) {
          v[s] = q;
          E[r * bw + i] = err;
        }
        if (err != T(0)) {
          const T* u = U + (i1 + i) * K + i1;
#pragma unroll
          for (int s2 = 0; s2 < 4; ++s2) {
            const int c = lane + 32 * s2;
            if (c > i && c < bw) v[s2] -= err * u[c];
          }
          const double e2 = double(err) * double(err);
          es += e2;
          upd += (unsigned long long)(bw - i - 1);
        }
      }
    }
#pragma unroll
    for (int s = 0; s < 4; ++s) {
      const int c = lane + 32 * s;
      if (c < bw) w[c] = v[s];
    }
    if (lane == 0) {
      err_row[r] += es;
      atomicAdd(&upd_acc, upd);
    }
  }
  __syncthreads();
  if (threadIdx.x == 0 && upd_acc) atomicAdd(updates, upd_acc);
}

// err_col[i1 + c] += sum_r E[r][c]^2 for the block's columns, one CTA per column, in a fixed
// order (no floating-point atomics), so the axis-in error ranking is the same on every run.
template <class T>
__global__ void err_col_kernel(const T* __restrict__ E, int64_t N, int bw, int64_t i1, double* __restrict__ err_col) {
  const int c = blockIdx.x;
  double s = 0;
  for (int64_t r = threadIdx.x; r < N; r += blockDim.x) {
    const double e = double(E[r * bw + c]);
    s += e * e;
  }
  s = block_sum(s);
  if (threadIdx.x == 0) err_col[i1 + c] += s;
}

inline void gemm(cublasHandle_t h, int m, int n, int k, const double* A, int lda, const double* B, int ldb,
                 double* C, int ldc) {
  const double alpha = -1, beta = 1;
  SPENSE_CUDA_CHECK(cublasDgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &alpha, A, lda, B, ldb, &beta, C, ldc));
}
inline void gemm(cublasHandle_t h, int m, int n, int k, const float* A, int lda, const float* B, int ldb,
                 float* C, int ldc) {
  const float alpha = -1, beta = 1;
  SPENSE_CUDA_CHECK(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &alpha, A, lda, B, ldb, &beta, C, ldc));
}

class GpuPruneCompute final : public PruneCompute {
 public:
  GpuPruneCompute() {
    SPENSE_CUDA_CHECK(cusolverDnCreate(&solver_));
    if (cusolverDnCreateParams(&params_) != CUSOLVER_STATUS_SUCCESS) {
      cusolverDnDestroy(solver_);
      throw Error("cuSOLVER: cusolverDnCreateParams failed", 1);
    }
  }
  ~GpuPruneCompute() override {
    if (params_) cusolverDnDestroyParams(params_);
    if (solver_) cusolverDnDestroy(solver_);
  }
  const char* name() const override { return "cuda"; }

  InverseFactor inverse_factor(const std::string& layer, const double* H, int64_t K,
                               double percdamp) const override {
    InverseFactor f;
    const double mean_diag = detail::inverse_factor_start(f, H, K, percdamp);
    const int64_t n = K * K;
    DeviceBuffer dH = device_copy_of(H, n), dA = device_alloc<double>(n);
    DeviceBuffer ddead = device_copy_of(f.dead.data(), K), dinfo = device_alloc<int>(1);
    // The 64-bit API: K^2 exceeds 2^31 from K = 46341 (Llama-3 405B's MLP has K = 53248).
    size_t pot_dev = 0, pot_host = 0;
    SPENSE_CUDA_CHECK(cusolverDnXpotrf_bufferSize(solver_, params_, CUBLAS_FILL_MODE_UPPER, K, CUDA_R_64F,
                                                  dA.get(), K, CUDA_R_64F, &pot_dev, &pot_host));
    DeviceBuffer work = device_alloc<uint8_t>(int64_t(pot_dev));
    std::vector<uint8_t> pot_hwork(std::max<size_t>(pot_host, 1));
    for (int attempt = 0;; ++attempt) {
      reverse_damp_kernel<<<grid_for(n), 256>>>(dH.as<double>(), dA.as<double>(), K, f.lambda, ddead.as<uint8_t>());
      SPENSE_CUDA_CHECK_LAUNCH();
      // Row-major lower = column-major upper (as dpotrf on the CPU): A = R R^T, R row-major lower.
      SPENSE_CUDA_CHECK(cusolverDnXpotrf(solver_, params_, CUBLAS_FILL_MODE_UPPER, K, CUDA_R_64F, dA.get(), K,
                                         CUDA_R_64F, work.get(), pot_dev, pot_hwork.data(), pot_host,
                                         dinfo.as<int>()));
      int info = 0;
      SPENSE_CUDA_CHECK(cudaMemcpy(&info, dinfo.get(), sizeof(int), cudaMemcpyDeviceToHost));
      if (info == 0) break;
      if (info < 0) throw Error(tag(layer) + ": cusolverDnXpotrf argument error " + std::to_string(info), 1);
      detail::inverse_factor_raise_damping(layer, f, attempt, percdamp, mean_diag);
    }
    work.reset();
    // V = J R J (upper), then U = V^-1; row-major upper = column-major lower.
    double* dU = dH.as<double>();  // H is no longer needed
    reverse_upper_kernel<<<grid_for(n), 256>>>(dA.as<double>(), dU, K);
    SPENSE_CUDA_CHECK_LAUNCH();
    dA.reset();
    size_t dev_bytes = 0, host_bytes = 0;
    SPENSE_CUDA_CHECK(cusolverDnXtrtri_bufferSize(solver_, CUBLAS_FILL_MODE_LOWER, CUBLAS_DIAG_NON_UNIT, K,
                                                  CUDA_R_64F, dU, K, &dev_bytes, &host_bytes));
    DeviceBuffer dwork = device_alloc<uint8_t>(int64_t(dev_bytes));
    std::vector<uint8_t> hwork(std::max<size_t>(host_bytes, 1));
    SPENSE_CUDA_CHECK(cusolverDnXtrtri(solver_, CUBLAS_FILL_MODE_LOWER, CUBLAS_DIAG_NON_UNIT, K, CUDA_R_64F, dU,
                                       K, dwork.get(), dev_bytes, hwork.data(), host_bytes, dinfo.as<int>()));
    int info = 0;
    SPENSE_CUDA_CHECK(cudaMemcpy(&info, dinfo.get(), sizeof(int), cudaMemcpyDeviceToHost));
    if (info != 0)
      throw Error(tag(layer) + ": triangular inverse of the Hessian factor failed (cusolverDnXtrtri info " +
                  std::to_string(info) + ")", 1);
    f.U.resize(size_t(n));
    SPENSE_CUDA_CHECK(cudaMemcpy(f.U.data(), dU, size_t(n) * sizeof(double), cudaMemcpyDeviceToHost));
    return f;
  }

  double obs_prune(double* W, int64_t N, int64_t K, const double* U, const uint8_t* prunable, int64_t B,
                   double* err_row, double* err_col) const override {
    return obs<double>(W, N, K, U, prunable, B, err_row, err_col);
  }
  double obs_prune(float* W, int64_t N, int64_t K, const float* U, const uint8_t* prunable, int64_t B,
                   double* err_row, double* err_col) const override {
    return obs<float>(W, N, K, U, prunable, B, err_row, err_col);
  }

  double quad_form_rows(const double* V, int64_t N, int64_t K, const double* H) const override {
    if (N == 0 || K == 0) return 0;
    const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(N, (int64_t(1) << 27) / K));
    DeviceBuffer dH = device_copy_of(H, K * K), dV = device_alloc<double>(chunk * K),
                 dC = device_alloc<double>(chunk * K);
    double total = 0;
    const double one = 1, zero = 0;
    for (int64_t r0 = 0; r0 < N; r0 += chunk) {
      const int64_t m = std::min(chunk, N - r0);
      copy_to_device(dV.get(), V + r0 * K, size_t(m * K) * sizeof(double));
      // Column-major: C (K x m) = H (K x K, symmetric) * V^T (K x m).
      SPENSE_CUDA_CHECK(cublasDgemm(blas_.get(), CUBLAS_OP_N, CUBLAS_OP_N, int(K), int(m), int(K), &one,
                                    dH.as<double>(), int(K), dV.as<double>(), int(K), &zero, dC.as<double>(), int(K)));
      double s = 0;
      SPENSE_CUDA_CHECK(cublasDdot(blas_.get(), int(m * K), dV.as<double>(), 1, dC.as<double>(), 1, &s));
      total += s;
    }
    return total;
  }

 private:
  template <class T>
  double obs(T* W, int64_t N, int64_t K, const T* U, const uint8_t* prunable, int64_t B, double* err_row,
             double* err_col) const {
    if (N == 0) return 0;
    (void)B;  // the device block width is kObsBlock; lazy batching is exact for any width
    const int64_t bw_max = std::min<int64_t>(kObsBlock, K);
    DeviceBuffer dW = device_copy_of(W, N * K), dU = device_copy_of(U, K * K), dud = device_alloc<T>(K),
                 dp = device_copy_of(prunable, K), dE = device_alloc<T>(N * bw_max),
                 drow = device_copy_of(err_row, N), dcol = device_copy_of(err_col, K),
                 dupd = device_alloc<unsigned long long>(1);
    SPENSE_CUDA_CHECK(cudaMemset(dupd.get(), 0, sizeof(unsigned long long)));
    diag_kernel<T><<<grid_for(K), 256>>>(dU.as<T>(), dud.as<T>(), K);
    SPENSE_CUDA_CHECK_LAUNCH();
    const int threads = 256, rows_per_cta = threads / 32;
    const unsigned ctas = unsigned(std::min<int64_t>((N + rows_per_cta - 1) / rows_per_cta, 4096));
    double flops = 0;
    for (int64_t i1 = 0; i1 < K; i1 += kObsBlock) {
      const int64_t i2 = std::min(i1 + kObsBlock, K), bw = i2 - i1;
      obs_block_kernel<T><<<ctas, threads>>>(dW.as<T>(), N, K, dU.as<T>(), dud.as<T>(), dp.as<uint8_t>(), i1,
                                             int(bw), dE.as<T>(), drow.as<double>(), dupd.as<unsigned long long>());
      SPENSE_CUDA_CHECK_LAUNCH();
      err_col_kernel<T><<<unsigned(bw), 256>>>(dE.as<T>(), N, int(bw), i1, dcol.as<double>());
      SPENSE_CUDA_CHECK_LAUNCH();
      if (i2 < K) {
        // Row-major W[:, i2:] -= E U[i1:i2, i2:]; column-major: W^T[i2:, :] -= U^T[i2:, i1:i2] E^T.
        gemm(blas_.get(), int(K - i2), int(N), int(bw), dU.as<T>() + i1 * K + i2, int(K), dE.as<T>(), int(bw),
             dW.as<T>() + i2, int(K));
        flops += 2.0 * double(N) * double(bw) * double(K - i2);
      }
    }
    unsigned long long upd = 0;
    SPENSE_CUDA_CHECK(cudaMemcpy(&upd, dupd.get(), sizeof(upd), cudaMemcpyDeviceToHost));
    SPENSE_CUDA_CHECK(cudaMemcpy(W, dW.get(), size_t(N * K) * sizeof(T), cudaMemcpyDeviceToHost));
    SPENSE_CUDA_CHECK(cudaMemcpy(err_row, drow.get(), size_t(N) * sizeof(double), cudaMemcpyDeviceToHost));
    SPENSE_CUDA_CHECK(cudaMemcpy(err_col, dcol.get(), size_t(K) * sizeof(double), cudaMemcpyDeviceToHost));
    return flops + 2.0 * double(upd);
  }

  cusolverDnHandle_t solver_ = nullptr;
  cusolverDnParams_t params_ = nullptr;
  BlasHandle blas_;
};

}  // namespace

std::unique_ptr<PruneCompute> make_gpu_prune_compute() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0)
    throw Error("--device cuda: no CUDA device is available");
  return std::make_unique<GpuPruneCompute>();
}

}  // namespace spense::cuda
