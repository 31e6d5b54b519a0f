// CUDA graphs of libtorch (at::cuda::CUDAGraph) behind a C interface, for
// lpeft_model::graph: a training step captured once per input shape and replayed,
// so the host issues one launch instead of ~1,500 operators.
//
// Capture runs on a side stream (CUDA forbids capturing the legacy default stream);
// replay runs on the current stream, ordered with the eager work around it. The
// caching allocator and the CUDA generator (dropout's Philox offsets) are told about
// the capture by CUDAGraph itself. Errors come back as a message, never as an
// exception across the C boundary.

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>

#include <cstring>
#include <exception>
#include <map>
#include <mutex>
#include <optional>

namespace {

// Only functions exported by libc10_cuda / libtorch_cuda are called (no inline CUDA runtime
// calls), so the binary needs no libcudart of its own: libtorch brings the one it was built with.
struct Graph {
  at::cuda::CUDAGraph graph;
  // The stream that was current before the capture, restored after it.
  std::optional<c10::cuda::CUDAStream> previous;
};

int fail(char* err, size_t len, const char* what) {
  if (err != nullptr && len > 0) {
    std::strncpy(err, what, len - 1);
    err[len - 1] = '\0';
  }
  return 1;
}

template <typename F>
int guarded(char* err, size_t len, F f) {
  try {
    f();
    return 0;
  } catch (const std::exception& e) {
    return fail(err, len, e.what());
  } catch (...) {
    return fail(err, len, "unknown C++ exception");
  }
}

// One side stream per device and thread for every capture: the caching allocator reuses a
// freed block only on the stream it was allocated on, so graphs that share a pool (replayed one
// at a time) share its memory only if they were captured on the same stream. With a fresh pool
// stream per capture, device memory grew with the number of batch shapes (MiniLM on STS-B:
// 21.9 GB against 1.2 GB without graphs). Per thread, because training stages run on threads of
// one process and may share a device (`lpeft run --per-device 2`): a stream cannot be captured
// by two threads at once (cudaStreamBeginCapture fails with cudaErrorIllegalState).
c10::cuda::CUDAStream capture_stream() {
  thread_local std::map<c10::DeviceIndex, c10::cuda::CUDAStream> streams;
  auto device = c10::cuda::current_device();
  auto it = streams.find(device);
  if (it == streams.end()) {
    it = streams.emplace(device, c10::cuda::getStreamFromPool(false, device)).first;
  }
  return it->second;
}

}  // namespace

extern "C" {

void* lpeft_graph_new(char* err, size_t len) {
  Graph* g = nullptr;
  guarded(err, len, [&] { g = new Graph(); });
  return g;
}

void lpeft_graph_free(void* g) { delete static_cast<Graph*>(g); }

// Begins capturing on a side stream of the current device. `share` (nullable): a graph
// captured before whose memory pool this one shares (graphs replayed one at a time can).
int lpeft_graph_begin(void* g, void* share, char* err, size_t len) {
  return guarded(err, len, [&] {
    auto* graph = static_cast<Graph*>(g);
    // What the current stream queued (the inputs' copies) lands before the capture reads it.
    // Only that stream: a device-wide synchronize would also wait on other stages' work there.
    graph->previous.emplace(c10::cuda::getCurrentCUDAStream());
    graph->previous->synchronize();
    c10::cuda::setCurrentCUDAStream(capture_stream());
    at::cuda::MempoolId_t pool = {0, 0};
    if (share != nullptr) {
      pool = static_cast<Graph*>(share)->graph.pool();
    }
    graph->graph.capture_begin(pool, cudaStreamCaptureModeThreadLocal);
  });
}

int lpeft_graph_end(void* g, char* err, size_t len) {
  auto* graph = static_cast<Graph*>(g);
  int rc = guarded(err, len, [&] { graph->graph.capture_end(); });
  if (graph->previous) {
    c10::cuda::setCurrentCUDAStream(*graph->previous);
    graph->previous.reset();
  }
  return rc;
}

int lpeft_graph_replay(void* g, char* err, size_t len) {
  return guarded(err, len, [&] { static_cast<Graph*>(g)->graph.replay(); });
}

// TF32 tensor-core kernels for float32 matmuls and convolutions, process-wide (libtorch
// keeps the switch in its global context): a stage's `precision: tf32`.
int lpeft_set_tf32(int on, char* err, size_t len) {
  return guarded(err, len, [&] {
    at::globalContext().setAllowTF32CuBLAS(on != 0);
    at::globalContext().setAllowTF32CuDNN(on != 0);
  });
}

// Seeds libtorch's CPU generator and the default generator of one CUDA device, where
// at::manual_seed seeds every device: a training stage starting on GPU 1 must not re-seed the
// dropout stream of one training on GPU 0 in the same process.
int lpeft_seed_device(int64_t device, uint64_t seed, char* err, size_t len) {
  return guarded(err, len, [&] {
    auto cpu = at::detail::getDefaultCPUGenerator();
    {
      std::lock_guard<std::mutex> lock(cpu.mutex());
      cpu.set_current_seed(seed);
    }
    auto gpu = at::cuda::detail::getDefaultCUDAGenerator(static_cast<c10::DeviceIndex>(device));
    std::lock_guard<std::mutex> lock(gpu.mutex());
    gpu.set_current_seed(seed);
  });
}

}  // extern "C"
