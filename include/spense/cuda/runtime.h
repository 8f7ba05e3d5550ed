// GPU runtime basics: RAII owners for device memory, streams, events and graphs, and the
// Context that every GPU layer shares (library handles, the side stream used for
// concurrent sparse/dense GEMMs, per-stream cuBLASLt workspaces, activation scratch).
// It does not choose a device: the current CUDA device at Context creation is used.
#pragma once
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "spense/cuda/check.h"

namespace spense::cuda {

// Owns one cudaMalloc allocation (256-byte aligned). Move-only.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& o) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* get() const { return ptr_; }
  template <class T>
  T* as() const { return static_cast<T*>(ptr_); }
  size_t size() const { return bytes_; }
  void reset();

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// Owns a non-blocking stream.
class Stream {
 public:
  Stream();
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return s_; }

 private:
  cudaStream_t s_ = nullptr;
};

// Owns an event; timing=false gives the cheaper event used for fork/join.
class Event {
 public:
  explicit Event(bool timing = false);
  ~Event();
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  cudaEvent_t get() const { return e_; }

 private:
  cudaEvent_t e_ = nullptr;
};

// Owns an instantiated CUDA graph captured from a stream:
//   GraphExec g; g.capture(s, [&](cudaStream_t s) { ...enqueue work on s... }); g.launch(s);
// (or begin_capture / end_capture around the work).
class GraphExec {
 public:
  GraphExec() = default;
  ~GraphExec();
  GraphExec(const GraphExec&) = delete;
  GraphExec& operator=(const GraphExec&) = delete;
  void begin_capture(cudaStream_t s);
  void end_capture(cudaStream_t s);
  // begin_capture, body(s), end_capture; if body throws, the capture is ended and discarded
  // (the stream is usable again) and the exception goes on.
  void capture(cudaStream_t s, const std::function<void(cudaStream_t)>& body);
  void launch(cudaStream_t s) const;
  bool ready() const { return exec_ != nullptr; }

 private:
  cudaGraph_t graph_ = nullptr;
  cudaGraphExec_t exec_ = nullptr;
};

// Throws spense::Error naming `what` unless compute capability major.minor >= need_major.need_minor.
void check_compute_capability(int major, int minor, int need_major, int need_minor,
                              const std::string& gpu_name, const std::string& what);

// True when stream s is being captured into a graph.
bool stream_is_capturing(cudaStream_t s);

// A new device buffer holding a copy of `bytes` bytes from host or device memory, complete on
// return. Load-time copies run on the legacy stream and may return before the data lands
// (device sources, pageable staging), and the layers' non-blocking streams do not wait for the
// legacy stream, so this synchronises the device after the copy.
DeviceBuffer device_upload(const void* src, size_t bytes);

// Host-to-device copy of `bytes` bytes, complete on return, ordered after earlier work on the
// legacy stream. Pageable host memory goes through two pinned staging buffers of the calling
// thread (32 MiB each, on a blocking stream), so that the host memcpy of one chunk (split over
// up to 4 threads) overlaps the DMA of the previous one: pageable cudaMemcpy moves 6.8-7.4 GiB/s
// host-to-device on the H100/H200 machines against 50 from pinned memory (docs/perf.md). Pinned
// or device sources, and copies under 4 MiB, are one cudaMemcpy.
void copy_to_device(void* dst, const void* src, size_t bytes);

// A device buffer of 2.5x the L2 size and the read that fills L2 with it (kernels.h
// read_through_l2), so that the next kernel finds none of its operands there.
class L2Flush {
 public:
  L2Flush();
  void operator()(cudaStream_t s) const;

 private:
  DeviceBuffer buf_;
};

// Median milliseconds of one run(s) call with a cold L2: L2 is flushed before each of `reps`
// timed calls (after one untimed call). `flush` may be shared across timings (nullptr: one is
// made here). For choosing between kernels and algorithms: in a decode step every layer's
// weights come from device memory, but back-to-back calls of one layer find up to the L2's
// size of them in L2 (50 MB on an H100: all of an FP8 o projection of Qwen3-32B), which
// favours other kernels than a decode step does.
float time_calls_cold_ms(cudaStream_t s, const std::function<void(cudaStream_t)>& run,
                         const L2Flush* flush = nullptr, int reps = 7);

// Scratch slots shared by all layers of a Context (they run one after another).
// GEMV_STREAM: the small-M kernel's streamed shapes' counters and partial tiles
// (gemv::Weights::stream_ws; zeroed when it grows, left zeroed by the kernel).
enum class Scratch : int { X_Q = 0, X_SCALE, ACC, ACC2, GEMV_STREAM, COUNT };

class Context {
 public:
  // Checks the current device (compute capability >= 8.0, the first with sparse tensor cores),
  // creates the cuBLASLt (and, if built with it, cuSPARSELt) handle, the side stream, the
  // fork/join events and one cuBLASLt workspace per stream role.
  explicit Context(size_t cublaslt_workspace_bytes = 32u << 20);
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  int device() const { return device_; }
  const cudaDeviceProp& props() const { return props_; }
  std::string gpu_name() const { return props_.name; }
  int cc_major() const { return props_.major; }
  int cc_minor() const { return props_.minor; }

  cublasLtHandle_t cublaslt() const { return lt_; }
  // Opaque cusparseLtHandle_t* (nullptr when built without cuSPARSELt).
  void* cusparselt_handle() const { return sparselt_; }

  // The second stream used by the concurrent hybrid path, and the events to fork/join it.
  cudaStream_t side_stream() const { return side_.get(); }
  cudaEvent_t fork_event() const { return fork_.get(); }
  cudaEvent_t join_event() const { return join_.get(); }

  // cuBLASLt workspace for stream role 0 (caller's stream) or 1 (side stream): concurrent
  // GEMMs must not share one.
  void* workspace(int role) const { return ws_[role].get(); }
  size_t workspace_bytes() const { return ws_bytes_; }

  // Grow scratch slot to at least `bytes` (call outside graph capture: growing frees the old
  // buffer, so graphs captured earlier that used it must not be replayed afterwards).
  void reserve_scratch(Scratch slot, size_t bytes);
  // The slot's buffer; throws if it holds fewer than `bytes` (prepare() was not called).
  void* scratch(Scratch slot, size_t bytes) const;
  // Incremented whenever reserve_scratch() reallocates a slot: a graph captured at an older
  // generation points at freed scratch and must be captured again.
  uint64_t scratch_generation() const { return scratch_gen_; }

 private:
  static int usable_device();  // the current device; throws a clear Error if there is none
  int device_ = usable_device();  // first member: checked before any stream or handle exists
  cudaDeviceProp props_{};
  cublasLtHandle_t lt_ = nullptr;
  void* sparselt_ = nullptr;
  Stream side_;
  Event fork_, join_;
  size_t ws_bytes_;
  DeviceBuffer ws_[2];
  DeviceBuffer scratch_[static_cast<int>(Scratch::COUNT)];
  uint64_t scratch_gen_ = 0;
};

// True when this build links cuSPARSELt (SparseLinear and HybridLinear need it).
bool have_cusparselt();
// "cuSPARSELt 0.8.0" or "not built with cuSPARSELt".
std::string cusparselt_version();

// cuSPARSELt handle lifetime, implemented in src/cuda/sparselt/ (stubs otherwise).
void* sparselt_handle_create();
void sparselt_handle_destroy(void* h);

}  // namespace spense::cuda
