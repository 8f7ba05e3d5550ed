// RAII owners and the shared Context (include/spense/cuda/runtime.h). Destructors never
// throw: a failing cudaFree/cudaStreamDestroy at teardown is ignored (the context is going
// away, and throwing from a destructor would terminate).
#include "spense/cuda/runtime.h"

#include "spense/cuda/kernels.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace spense::cuda {

void throw_status(const char* lib, const char* name, const char* detail, const char* stmt,
                  const char* file, int line) {
  std::string msg = std::string(lib) + " error " + (name ? name : "?");
  if (detail && *detail) msg += std::string(" (") + detail + ")";
  msg += std::string(" in ") + stmt + " at " + file + ":" + std::to_string(line);
  throw Error(msg, 1);
}

DeviceBuffer::DeviceBuffer(size_t bytes) : bytes_(bytes) {
  if (bytes) SPENSE_CUDA_CHECK(cudaMalloc(&ptr_, bytes));
}
DeviceBuffer::~DeviceBuffer() { reset(); }
DeviceBuffer::DeviceBuffer(DeviceBuffer&& o) noexcept
    : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    reset();
    ptr_ = std::exchange(o.ptr_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0);
  }
  return *this;
}
void DeviceBuffer::reset() {
  if (ptr_) cudaFree(ptr_);
  ptr_ = nullptr;
  bytes_ = 0;
}

Stream::Stream() { SPENSE_CUDA_CHECK(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking)); }
Stream::~Stream() {
  if (s_) cudaStreamDestroy(s_);
}

Event::Event(bool timing) {
  SPENSE_CUDA_CHECK(cudaEventCreateWithFlags(&e_, timing ? cudaEventDefault : cudaEventDisableTiming));
}
Event::~Event() {
  if (e_) cudaEventDestroy(e_);
}

GraphExec::~GraphExec() {
  if (exec_) cudaGraphExecDestroy(exec_);
  if (graph_) cudaGraphDestroy(graph_);
}
void GraphExec::begin_capture(cudaStream_t s) {
  SPENSE_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
}
void GraphExec::end_capture(cudaStream_t s) {
  if (exec_) cudaGraphExecDestroy(exec_);
  if (graph_) cudaGraphDestroy(graph_);
  exec_ = nullptr;
  graph_ = nullptr;
  SPENSE_CUDA_CHECK(cudaStreamEndCapture(s, &graph_));
  SPENSE_CUDA_CHECK(cudaGraphInstantiate(&exec_, graph_, 0));
}
void GraphExec::capture(cudaStream_t s, const std::function<void(cudaStream_t)>& body) {
  begin_capture(s);
  try {
    body(s);
  } catch (...) {
    cudaGraph_t partial = nullptr;
    (void)cudaStreamEndCapture(s, &partial);
    if (partial) (void)cudaGraphDestroy(partial);
    throw;
  }
  end_capture(s);
}
void GraphExec::launch(cudaStream_t s) const { SPENSE_CUDA_CHECK(cudaGraphLaunch(exec_, s)); }

void check_compute_capability(int major, int minor, int need_major, int need_minor,
                              const std::string& gpu_name, const std::string& what) {
  if (major * 10 + minor < need_major * 10 + need_minor)
    throw Error(what + " needs a GPU of compute capability " + std::to_string(need_major) + "." +
                    std::to_string(need_minor) + " or newer; '" + gpu_name + "' has " +
                    std::to_string(major) + "." + std::to_string(minor),
                2);
}

DeviceBuffer device_upload(const void* src, size_t bytes) {
  DeviceBuffer b(bytes);
  copy_to_device(b.get(), src, bytes);
  SPENSE_CUDA_CHECK(cudaDeviceSynchronize());
  return b;
}

namespace {

// copy_to_device's pinned buffers and stream, one set per thread (allocated on first use).
struct Staging {
  static constexpr size_t kChunk = size_t(32) << 20;
  void* buf[2] = {nullptr, nullptr};
  cudaStream_t stream = nullptr;  // blocking: ordered with the legacy stream both ways
  cudaEvent_t done[2] = {nullptr, nullptr};
  Staging() {
    for (int i = 0; i < 2; ++i) {
      SPENSE_CUDA_CHECK(cudaMallocHost(&buf[i], kChunk));
      SPENSE_CUDA_CHECK(cudaEventCreateWithFlags(&done[i], cudaEventDisableTiming));
    }
    SPENSE_CUDA_CHECK(cudaStreamCreate(&stream));
  }
  ~Staging() {
    for (int i = 0; i < 2; ++i) {
      if (buf[i]) cudaFreeHost(buf[i]);
      if (done[i]) cudaEventDestroy(done[i]);
    }
    if (stream) cudaStreamDestroy(stream);
  }
};

// One host thread copies about 9.5 GiB/s (measured, docs/perf.md), a fifth of the pinned DMA
// rate, so the staging copy of a chunk is split over a few threads (created per chunk: tens of
// microseconds against the milliseconds a 32 MiB chunk takes).
void parallel_memcpy(void* dst, const void* src, size_t n) {
  constexpr size_t kMinPiece = size_t(4) << 20;
  const size_t hw = std::max(1u, std::thread::hardware_concurrency());
  const size_t parts = std::min<size_t>({4, hw, std::max<size_t>(1, n / kMinPiece)});
  if (parts <= 1) {
    std::memcpy(dst, src, n);
    return;
  }
  const size_t piece = (n / parts + 4095) & ~size_t(4095);  // page-aligned pieces
  auto copy_piece = [=](size_t i) {
    std::memcpy(static_cast<char*>(dst) + i * piece, static_cast<const char*>(src) + i * piece,
                std::min(piece, n - i * piece));
  };
  std::vector<std::thread> workers;
  workers.reserve(parts);
  size_t i = 1;
  try {
    for (; i < parts && i * piece < n; ++i) workers.emplace_back(copy_piece, i);
  } catch (...) {  // no thread to be had (system_error, bad_alloc): the caller copies the rest
    for (; i < parts && i * piece < n; ++i) copy_piece(i);
  }
  copy_piece(0);
  for (auto& w : workers) w.join();
}

bool pageable_host(const void* p) {
  cudaPointerAttributes a{};
  if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
    (void)cudaGetLastError();
    return true;
  }
  return a.type == cudaMemoryTypeUnregistered;
}

}  // namespace

void copy_to_device(void* dst, const void* src, size_t bytes) {
  if (!bytes) return;
  if (bytes < (size_t(4) << 20) || !pageable_host(src)) {
    SPENSE_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDefault));
    return;
  }
  thread_local Staging st;
  bool pending[2] = {false, false};
  for (size_t off = 0, i = 0; off < bytes; off += Staging::kChunk, ++i) {
    const int b = int(i & 1);
    const size_t n = std::min(Staging::kChunk, bytes - off);
    if (pending[b]) SPENSE_CUDA_CHECK(cudaEventSynchronize(st.done[b]));  // its previous chunk has left
    parallel_memcpy(st.buf[b], static_cast<const char*>(src) + off, n);
    SPENSE_CUDA_CHECK(cudaMemcpyAsync(static_cast<char*>(dst) + off, st.buf[b], n, cudaMemcpyHostToDevice, st.stream));
    SPENSE_CUDA_CHECK(cudaEventRecord(st.done[b], st.stream));
    pending[b] = true;
  }
  SPENSE_CUDA_CHECK(cudaStreamSynchronize(st.stream));
}

L2Flush::L2Flush() {
  int dev = 0, l2 = 0;
  SPENSE_CUDA_CHECK(cudaGetDevice(&dev));
  SPENSE_CUDA_CHECK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, dev));
  const size_t bytes = (std::max<size_t>(size_t(l2), size_t(4) << 20) * 5 / 2 + 4095) / 4096 * 4096;
  buf_ = DeviceBuffer(bytes);
  SPENSE_CUDA_CHECK(cudaMemset(buf_.get(), 0, bytes));  // defined contents for the reads,
  SPENSE_CUDA_CHECK(cudaDeviceSynchronize());            // written before non-blocking streams read them
}

void L2Flush::operator()(cudaStream_t s) const { read_through_l2(buf_.get(), buf_.size(), nullptr, s); }

float time_calls_cold_ms(cudaStream_t s, const std::function<void(cudaStream_t)>& run, const L2Flush* shared,
                         int reps) {
  std::unique_ptr<L2Flush> own;
  if (!shared) own = std::make_unique<L2Flush>();
  const L2Flush& flush = shared ? *shared : *own;
  run(s);  // lazy set-up (plans, scratch) outside the timing
  std::vector<std::unique_ptr<Event>> e0, e1;
  for (int i = 0; i < reps; ++i) {
    e0.push_back(std::make_unique<Event>(true));
    e1.push_back(std::make_unique<Event>(true));
    flush(s);
    SPENSE_CUDA_CHECK(cudaEventRecord(e0.back()->get(), s));
    run(s);
    SPENSE_CUDA_CHECK(cudaEventRecord(e1.back()->get(), s));
  }
  std::vector<float> t;
  for (int i = 0; i < reps; ++i) {
    SPENSE_CUDA_CHECK(cudaEventSynchronize(e1[i]->get()));
    float ms = 0;
    SPENSE_CUDA_CHECK(cudaEventElapsedTime(&ms, e0[i]->get(), e1[i]->get()));
    t.push_back(ms);
  }
  std::sort(t.begin(), t.end());
  return t.empty() ? 0.f : t[t.size() / 2];
}

bool stream_is_capturing(cudaStream_t s) {
  cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
  SPENSE_CUDA_CHECK(cudaStreamIsCapturing(s, &st));
  return st != cudaStreamCaptureStatusNone;
}

int Context::usable_device() {
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    (void)cudaGetLastError();
    throw Error(std::string("no usable CUDA GPU: ") +
                    (e != cudaSuccess ? cudaGetErrorString(e) : "no CUDA devices found"),
                2);
  }
  int dev = 0;
  SPENSE_CUDA_CHECK(cudaGetDevice(&dev));
  return dev;
}

Context::Context(size_t cublaslt_workspace_bytes) : fork_(false), join_(false), ws_bytes_(cublaslt_workspace_bytes) {
  SPENSE_CUDA_CHECK(cudaGetDeviceProperties(&props_, device_));
  // 2:4 sparse tensor cores and BF16 tensor cores start with Ampere (8.0).
  check_compute_capability(props_.major, props_.minor, 8, 0, props_.name, "Spense's GPU runtime");
  SPENSE_CUDA_CHECK(cublasLtCreate(&lt_));
  try {
    if (have_cusparselt()) sparselt_ = sparselt_handle_create();
    ws_[0] = DeviceBuffer(ws_bytes_);
    ws_[1] = DeviceBuffer(ws_bytes_);
  } catch (...) {
    if (sparselt_) sparselt_handle_destroy(sparselt_);
    cublasLtDestroy(lt_);
    throw;
  }
}

Context::~Context() {
  cudaDeviceSynchronize();
  if (sparselt_) sparselt_handle_destroy(sparselt_);
  if (lt_) cublasLtDestroy(lt_);
}

void Context::reserve_scratch(Scratch slot, size_t bytes) {
  DeviceBuffer& b = scratch_[static_cast<int>(slot)];
  if (b.size() >= bytes) return;
  if (b.get()) SPENSE_CUDA_CHECK(cudaDeviceSynchronize());  // old buffer may still be in use
  b = DeviceBuffer(0);
  // Round up so that a sweep over growing M does not reallocate at every step; zero it so that
  // padding rows never hold NaN patterns from earlier allocations.
  size_t rounded = (bytes + (1u << 20) - 1) & ~size_t((1u << 20) - 1);
  b = DeviceBuffer(rounded);
  SPENSE_CUDA_CHECK(cudaMemset(b.get(), 0, rounded));
  // cudaMemset runs on the legacy stream, which does not order against the non-blocking
  // streams the layers run on: wait for it, or a kernel could write the slot before the
  // zeroing lands (seen as intermittently wrong FP8 results).
  SPENSE_CUDA_CHECK(cudaDeviceSynchronize());
  ++scratch_gen_;
}

void* Context::scratch(Scratch slot, size_t bytes) const {
  const DeviceBuffer& b = scratch_[static_cast<int>(slot)];
  if (b.size() < bytes)
    throw Error("internal: scratch slot " + std::to_string(static_cast<int>(slot)) + " holds " +
                    std::to_string(b.size()) + " bytes, " + std::to_string(bytes) +
                    " needed (prepare(M) was not called for this M)",
                1);
  return b.get();
}

}  // namespace spense::cuda
