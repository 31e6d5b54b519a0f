// The estimation masks' scaling of bf16 activations by an f32 vector, as two CUDA kernels
// compiled at run time by NVRTC: libtorch has no vectorised kernel for "bf16 times f32, rounded
// to bf16" (its mixed-type product takes the generic path with a cast per element, a quarter of
// the memory bandwidth), and the backward needs ∂x and the f32 product behind ∂s from one pass
// over the same two tensors.
//
// The values are libtorch's to the bit: each product is one f32 multiplication of the widened
// operands, rounded to nearest even into bf16 (what `mul_out` into a bf16 tensor does), or kept
// in f32 for ∂s, whose sums the caller leaves to libtorch.
//
// NVRTC and the CUDA driver are opened with dlopen, so nothing is linked beyond what libtorch
// brings; the kernels are compiled once per machine (kept in a disk cache, see cache_dir) and
// loaded once per device. Launches go to
// the current stream, so a CUDA-graph capture records them. Errors come back as a message.

#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>

#include <dlfcn.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace {

// The driver and NVRTC types used here, by their C ABI (cuda.h and nvrtc.h are not needed).
using CUresult = int;
using CUdevice = int;
using CUcontext = void*;
using CUmodule = void*;
using CUfunction = void*;
using nvrtcResult = int;
using nvrtcProgram = void*;

const char* kSource =
#include "kernels.cuh"
    ;

constexpr int kKernelCount = 10;
const char* kKernels[kKernelCount] = {"lpeft_scale8",      "lpeft_scale1",    "lpeft_scale_back8",
                                      "lpeft_scale_back1", "lpeft_widen8",    "lpeft_widen1",
                                      "lpeft_add_norm",    "lpeft_add_norm_back",
                                      "lpeft_column_sums", "lpeft_add_norm_params"};
enum { kAddNorm = 6, kAddNormBack = 7, kColumnSums = 8, kAddNormParams = 9 };

struct Driver {
  CUresult (*cuInit)(unsigned);
  CUresult (*cuDeviceGet)(CUdevice*, int);
  CUresult (*cuDeviceGetAttribute)(int*, int, CUdevice);
  CUresult (*cuCtxGetCurrent)(CUcontext*);
  CUresult (*cuCtxSetCurrent)(CUcontext);
  CUresult (*cuDevicePrimaryCtxRetain)(CUcontext*, CUdevice);
  CUresult (*cuModuleLoadData)(CUmodule*, const void*);
  CUresult (*cuModuleGetFunction)(CUfunction*, CUmodule, const char*);
  CUresult (*cuLaunchKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
                             unsigned, unsigned, void*, void**, void**);
  CUresult (*cuGetErrorString)(CUresult, const char**);
};

struct Nvrtc {
  nvrtcResult (*create)(nvrtcProgram*, const char*, const char*, int, const char* const*,
                        const char* const*);
  nvrtcResult (*compile)(nvrtcProgram, int, const char* const*);
  nvrtcResult (*log_size)(nvrtcProgram, size_t*);
  nvrtcResult (*log)(nvrtcProgram, char*);
  nvrtcResult (*cubin_size)(nvrtcProgram, size_t*);
  nvrtcResult (*cubin)(nvrtcProgram, char*);
  nvrtcResult (*destroy)(nvrtcProgram*);
  const char* (*error_string)(nvrtcResult);
};

struct Error {
  std::string what;
};

template <typename F>
void sym(void* lib, const char* name, F& f) {
  void* p = dlsym(lib, name);
  if (p == nullptr) throw Error{std::string("no symbol ") + name};
  f = reinterpret_cast<F>(p);
}

// libnvrtc beside libtorch's CUDA libraries (the PyPI wheels: site-packages/nvidia/cu*/lib), or
// wherever the loader finds it; $LPEFT_NVRTC names one.
void* open_nvrtc() {
  std::vector<std::string> names;
  if (const char* e = std::getenv("LPEFT_NVRTC")) names.emplace_back(e);
  Dl_info info;
  if (dladdr(reinterpret_cast<void*>(&c10::cuda::device_count), &info) != 0 &&
      info.dli_fname != nullptr) {
    std::string dir(info.dli_fname);
    dir = dir.substr(0, dir.rfind('/') + 1);
    for (const char* sub : {"../../nvidia/cu13/lib/libnvrtc.so.13",
                            "../../nvidia/cuda_nvrtc/lib/libnvrtc.so.12"}) {
      names.push_back(dir + sub);
    }
  }
  for (const char* n : {"libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"}) names.emplace_back(n);
  for (const auto& n : names) {
    auto slash = n.rfind('/');
    if (slash != std::string::npos) {
      // NVRTC opens its builtins by soname at compile time; the wheels ship them beside it
      // without a search path to them, so they are loaded first from the same directory.
      for (const char* b : {"libnvrtc-builtins.so.13.0", "libnvrtc-builtins.so.12"}) {
        dlopen((n.substr(0, slash + 1) + b).c_str(), RTLD_NOW | RTLD_GLOBAL);
      }
    }
    if (void* lib = dlopen(n.c_str(), RTLD_NOW | RTLD_LOCAL)) return lib;
  }
  throw Error{"libnvrtc not found (set LPEFT_NVRTC to its path)"};
}

struct Loaded {
  CUcontext ctx;
  CUfunction f[kKernelCount];
};

struct State {
  std::mutex mutex;
  bool tried = false;
  std::string failed;  // why the kernels are unavailable, once tried
  Driver cu{};
  Nvrtc rtc{};
  std::map<int, std::string> cubins;  // by compute capability (major*10+minor)
  std::map<int, Loaded> devices;
};

// Never destroyed: a stage that ends while the compiling thread still runs must not tear the
// state down under it at exit.
State& state() {
  static State* s = new State();
  return *s;
}

void check(const Driver& cu, CUresult r, const char* what) {
  if (r == 0) return;
  const char* msg = nullptr;
  if (cu.cuGetErrorString != nullptr) cu.cuGetErrorString(r, &msg);
  throw Error{std::string(what) + ": " + (msg != nullptr ? msg : std::to_string(r))};
}

void open_libraries(State& st) {
  void* cuda = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (cuda == nullptr) throw Error{"libcuda.so.1 not found"};
  Driver& cu = st.cu;
  sym(cuda, "cuInit", cu.cuInit);
  sym(cuda, "cuDeviceGet", cu.cuDeviceGet);
  sym(cuda, "cuDeviceGetAttribute", cu.cuDeviceGetAttribute);
  sym(cuda, "cuCtxGetCurrent", cu.cuCtxGetCurrent);
  sym(cuda, "cuCtxSetCurrent", cu.cuCtxSetCurrent);
  sym(cuda, "cuDevicePrimaryCtxRetain", cu.cuDevicePrimaryCtxRetain);
  sym(cuda, "cuModuleLoadData", cu.cuModuleLoadData);
  sym(cuda, "cuModuleGetFunction", cu.cuModuleGetFunction);
  sym(cuda, "cuLaunchKernel", cu.cuLaunchKernel);
  sym(cuda, "cuGetErrorString", cu.cuGetErrorString);
}

// NVRTC, opened only when a kernel has to be compiled (not when the disk cache has it).
void open_nvrtc_into(State& st) {
  if (st.rtc.create != nullptr) return;
  void* lib = open_nvrtc();
  Nvrtc& r = st.rtc;
  sym(lib, "nvrtcCreateProgram", r.create);
  sym(lib, "nvrtcCompileProgram", r.compile);
  sym(lib, "nvrtcGetProgramLogSize", r.log_size);
  sym(lib, "nvrtcGetProgramLog", r.log);
  sym(lib, "nvrtcGetCUBINSize", r.cubin_size);
  sym(lib, "nvrtcGetCUBIN", r.cubin);
  sym(lib, "nvrtcDestroyProgram", r.destroy);
  sym(lib, "nvrtcGetErrorString", r.error_string);
}

// Where compiled kernels are kept between processes: $LPEFT_KERNEL_CACHE ("off": nowhere),
// else $XDG_CACHE_HOME/lpeft/kernels, else ~/.cache/lpeft/kernels.
std::string cache_dir() {
  if (const char* e = std::getenv("LPEFT_KERNEL_CACHE")) {
    return std::string(e) == "off" ? std::string() : std::string(e);
  }
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x != nullptr && *x != '\0') {
    return std::string(x) + "/lpeft/kernels";
  }
  if (const char* h = std::getenv("HOME"); h != nullptr && *h != '\0') {
    return std::string(h) + "/.cache/lpeft/kernels";
  }
  return std::string();
}

// The cache file of the kernels for one compute capability: named by a hash of their source
// and options (FNV-1a, stable everywhere), so an edited kernel never loads an old binary.
std::string cache_file(int cc) {
  std::string dir = cache_dir();
  if (dir.empty()) return dir;
  uint64_t h = 1469598103934665603ULL;
  for (const char* p = kSource; *p != '\0'; ++p) h = (h ^ static_cast<unsigned char>(*p)) * 1099511628211ULL;
  char name[64];
  std::snprintf(name, sizeof name, "/scale-sm%d-%016llx.cubin", cc, static_cast<unsigned long long>(h));
  return dir + name;
}

bool read_file(const std::string& path, std::string& out) {
  FILE* f = path.empty() ? nullptr : std::fopen(path.c_str(), "rb");
  if (f == nullptr) return false;
  std::string bytes;
  char buf[1 << 14];
  size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) bytes.append(buf, n);
  bool ok = std::ferror(f) == 0 && !bytes.empty();
  std::fclose(f);
  if (ok) out = std::move(bytes);
  return ok;
}

// Best effort: written to a temporary name and renamed, so a reader never sees half a file.
void write_file(const std::string& path, const std::string& bytes) {
  if (path.empty()) return;
  std::string dir = path.substr(0, path.rfind('/'));
  for (size_t i = 1; i <= dir.size(); ++i) {
    if (i == dir.size() || dir[i] == '/') mkdir(dir.substr(0, i).c_str(), 0755);
  }
  std::string tmp = path + ".tmp." + std::to_string(getpid());
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) return;
  bool ok = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
  ok = std::fclose(f) == 0 && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) std::remove(tmp.c_str());
}

// SASS for one compute capability, so the driver compiles nothing on first use: from this
// process's memory, the disk cache, or NVRTC (about 0.3 s, then cached on disk). `fresh`
// skips the disk cache (a cached binary the driver refused).
const std::string& cubin_for(State& st, int cc, bool fresh = false) {
  auto it = st.cubins.find(cc);
  if (it != st.cubins.end() && !fresh) return it->second;
  std::string path = cache_file(cc);
  std::string cached;
  if (!fresh && read_file(path, cached)) return st.cubins[cc] = std::move(cached);
  open_nvrtc_into(st);
  Nvrtc& r = st.rtc;
  nvrtcProgram prog = nullptr;
  if (r.create(&prog, kSource, "lpeft_scale.cu", 0, nullptr, nullptr) != 0) {
    throw Error{"nvrtcCreateProgram failed"};
  }
  std::string arch = "--gpu-architecture=sm_" + std::to_string(cc);
  const char* opts[] = {arch.c_str(), "--std=c++14"};
  nvrtcResult rc = r.compile(prog, 2, opts);
  if (rc != 0) {
    size_t n = 0;
    r.log_size(prog, &n);
    std::string log(n, '\0');
    r.log(prog, log.data());
    r.destroy(&prog);
    throw Error{std::string("NVRTC (") + arch + "): " + r.error_string(rc) + "\n" + log};
  }
  size_t n = 0;
  r.cubin_size(prog, &n);
  std::string bin(n, '\0');
  r.cubin(prog, bin.data());
  r.destroy(&prog);
  write_file(path, bin);
  return st.cubins[cc] = std::move(bin);
}

// Runs `f` (the caller holds the mutex) unless an earlier call failed; its failure is kept,
// so every later call falls back at once, without trying again.
template <typename F>
auto latched(State& st, F f) -> decltype(f()) {
  if (!st.failed.empty()) throw Error{st.failed};
  try {
    return f();
  } catch (const Error& e) {
    st.failed = e.what;
    throw;
  }
}

// The libraries, opened once (the caller holds the mutex); throws why they cannot be.
void ensure_libraries(State& st) {
  if (st.tried) return latched(st, [] {});
  st.tried = true;
  latched(st, [&] {
    open_libraries(st);
    check(st.cu, st.cu.cuInit(0), "cuInit");
  });
}

// The device's compute capability as NVRTC names it (major*10 + minor).
int capability(State& st, CUdevice dev) {
  int major = 0, minor = 0;
  check(st.cu, st.cu.cuDeviceGetAttribute(&major, 75, dev), "compute capability");  // MAJOR
  check(st.cu, st.cu.cuDeviceGetAttribute(&minor, 76, dev), "compute capability");  // MINOR
  return major * 10 + minor;
}

const Loaded& load(State& st, int device);

// The kernels of one device, in its primary context (the one libtorch's runtime uses).
const Loaded& kernels(int device) {
  State& st = state();
  std::lock_guard<std::mutex> lock(st.mutex);
  ensure_libraries(st);
  auto it = st.devices.find(device);
  if (it != st.devices.end()) return it->second;
  return latched(st, [&]() -> const Loaded& { return load(st, device); });
}

const Loaded& load(State& st, int device) {
  Driver& cu = st.cu;
  CUdevice dev = 0;
  check(cu, cu.cuDeviceGet(&dev, device), "cuDeviceGet");
  CUcontext ctx = nullptr;
  check(cu, cu.cuDevicePrimaryCtxRetain(&ctx, dev), "cuDevicePrimaryCtxRetain");
  check(cu, cu.cuCtxSetCurrent(ctx), "cuCtxSetCurrent");
  int cc = capability(st, dev);
  CUmodule module = nullptr;
  if (cu.cuModuleLoadData(&module, cubin_for(st, cc).data()) != 0) {
    check(cu, cu.cuModuleLoadData(&module, cubin_for(st, cc, true).data()), "cuModuleLoadData");
  }
  Loaded l{};
  l.ctx = ctx;
  for (int k = 0; k < kKernelCount; ++k) {
    check(cu, cu.cuModuleGetFunction(&l.f[k], module, kKernels[k]), kKernels[k]);
  }
  return st.devices.emplace(device, l).first->second;
}

int fail(char* err, size_t len, const std::string& what) {
  if (err != nullptr && len > 0) {
    std::strncpy(err, what.c_str(), len - 1);
    err[len - 1] = '\0';
  }
  return 1;
}

bool aligned(const void* p) { return p == nullptr || reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Queues kernel `k` with `args` on `device`'s current stream (a CUDA-graph capture records it).
void enqueue(int device, int k, long long blocks, unsigned threads, void** args) {
  // The device current while the kernel is queued, restored after (CUDAGuard would inline
  // CUDA runtime calls; these go through libc10_cuda).
  struct Restore {
    c10::DeviceIndex previous;
    ~Restore() { c10::cuda::MaybeExchangeDevice(previous); }
  } restore{c10::cuda::ExchangeDevice(static_cast<c10::DeviceIndex>(device))};
  const Loaded& l = kernels(device);
  const Driver& cu = state().cu;
  // The runtime makes the primary context current lazily; the module lives in it.
  CUcontext ctx = nullptr;
  check(cu, cu.cuCtxGetCurrent(&ctx), "cuCtxGetCurrent");
  if (ctx != l.ctx) check(cu, cu.cuCtxSetCurrent(l.ctx), "cuCtxSetCurrent");
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device));
  check(cu,
        cu.cuLaunchKernel(l.f[k], static_cast<unsigned>(blocks), 1, 1, threads, 1, 1, 0, stream,
                          args, nullptr),
        kKernels[k]);
}

// Runs `f`, turning what it throws into the C interface's status and message.
template <typename F>
int guarded(char* err, size_t len, F f) {
  try {
    f();
    return 0;
  } catch (const Error& e) {
    return fail(err, len, e.what);
  } catch (const std::exception& e) {
    return fail(err, len, e.what());
  } catch (...) {
    return fail(err, len, "unknown C++ exception");
  }
}

// Launches elementwise kernel `k` (vectorised `k`, scalar `k + 1`) over n elements of rows of
// c (the widening has no rows: c = 8, so that only n and alignment choose).
int launch(int device, int k, void* a, void* b, void* c_, void* d, void* e, int64_t n,
           int64_t c, char* err, size_t len) {
  return guarded(err, len, [&] {
    if (n == 0) return;
    bool vec = c % 8 == 0 && n % 8 == 0 && aligned(a) && aligned(b) && aligned(c_) &&
               aligned(d) && aligned(e);
    long long count = vec ? n / 8 : n;
    int cols = static_cast<int>(vec ? c / 8 : c);
    unsigned threads = 256;
    long long blocks = (count + threads - 1) / threads;
    if (blocks > 65535LL * 8) blocks = 65535LL * 8;  // the loops stride over the rest
    // The kernels' parameter lists (no allocation: this runs for every launch).
    void* scale_args[] = {&a, &b, &c_, &count, &cols};
    void* back_args[] = {&a, &b, &c_, &d, &e, &count, &cols};
    void* widen_args[] = {&a, &b, &count, &cols};
    void** args = k == 0 ? scale_args : k == 2 ? back_args : widen_args;
    enqueue(device, vec ? k : k + 1, blocks, threads, args);
  });
}

// Threads a block for rows of d in the add-norm kernels (each thread holds up to kCols = 8
// columns); 0 where d is out of their range.
unsigned norm_threads(int64_t d) {
  return d < 1 ? 0 : d <= 1024 ? 128 : d <= 2048 ? 256 : d <= 4096 ? 512 : 0;
}

}  // namespace

extern "C" {

// Compiles the kernels for `device`'s architecture ahead of their first launch (NVRTC takes
// about 0.3 s), so that a stage can do it on a thread while it loads its model.
int lpeft_scale_prepare(int device, char* err, size_t len) {
  try {
    State& st = state();
    std::lock_guard<std::mutex> lock(st.mutex);
    ensure_libraries(st);
    CUdevice dev = 0;
    check(st.cu, st.cu.cuDeviceGet(&dev, device), "cuDeviceGet");
    latched(st, [&] { cubin_for(st, capability(st, dev)); });
    return 0;
  } catch (const Error& e) {
    return fail(err, len, e.what);
  } catch (const std::exception& e) {
    return fail(err, len, e.what());
  }
}

// out = x · s (x, out: bf16 [n / c, c] contiguous; s: f32 [c]) on `device`'s current stream.
int lpeft_scale_bf16(int device, const void* x, const void* s, void* out, int64_t n, int64_t c,
                     char* err, size_t len) {
  return launch(device, 0, const_cast<void*>(x), const_cast<void*>(s), out, nullptr, nullptr, n,
                c, err, len);
}

// out = x as f32 (x bf16, n elements, contiguous).
int lpeft_widen_bf16(int device, const void* x, void* out, int64_t n, char* err, size_t len) {
  return launch(device, 4, const_cast<void*>(x), out, nullptr, nullptr, nullptr, n, 8, err, len);
}

// The rows of d that one add-norm backward block takes: fixed, so that the column sums of ∂γ
// and ∂β add the same partial sums in the same order on every GPU.
constexpr int64_t kNormRowsPerBlock = 16;

// The largest row the add-norm kernels take (wider rows stay on libtorch's path).
int64_t lpeft_add_norm_max_width() { return 4096; }

// Forward of LayerNorm(drop(x) + r) over `rows` rows of d (see kernels.cuh: lpeft_add_norm): x
// f32 or bf16 (`x_bf16`), r, gamma, beta, s, y f32; m a uint8 keep-mask or null; mean, rstd
// [rows] f32. All contiguous on `device`.
int lpeft_add_norm_forward(int device, const void* x, int x_bf16, const void* r, const void* m,
                           float scale, const void* gamma, const void* beta, float eps, void* s,
                           void* y, void* mean, void* rstd, int64_t rows, int64_t d, char* err,
                           size_t len) {
  return guarded(err, len, [&] {
    unsigned threads = norm_threads(d);
    if (threads == 0) throw Error{"add-norm: row width " + std::to_string(d) + " out of range"};
    if (rows == 0) return;
    int dd = static_cast<int>(d);
    void* args[] = {&x, &x_bf16, &r, &m, &scale, &gamma, &beta, &eps,
                    &s, &y,      &mean, &rstd, &dd};
    enqueue(device, kAddNorm, rows, threads, args);
  });
}

// Backward of the above for upstream g (f32): dr (f32, or null), dx (x's type per `dx_bf16`, or
// null), and where `dparams` is not null, ∂γ then ∂β in it ([2, d] f32), summed through
// `partial` ([ceil(rows / lpeft_add_norm_rows_per_block()), 2, d] f32 scratch; else unused):
// a second pass over g and s, only for trained norms.
int lpeft_add_norm_backward(int device, const void* g, const void* s, const void* mean,
                            const void* rstd, const void* gamma, const void* m, float scale,
                            void* dr, void* dx, int dx_bf16, void* partial, void* dparams,
                            int64_t rows, int64_t d, char* err, size_t len) {
  return guarded(err, len, [&] {
    unsigned threads = norm_threads(d);
    if (threads == 0) throw Error{"add-norm: row width " + std::to_string(d) + " out of range"};
    if (rows == 0) return;
    int dd = static_cast<int>(d);
    if (dr != nullptr || dx != nullptr) {
      void* args[] = {&g, &s, &mean, &rstd, &gamma, &m, &scale, &dr, &dx, &dx_bf16, &dd};
      enqueue(device, kAddNormBack, rows, threads, args);
    }
    if (dparams != nullptr) {
      int per_block = static_cast<int>(kNormRowsPerBlock);
      long long blocks = (rows + kNormRowsPerBlock - 1) / kNormRowsPerBlock;
      long long n_rows = rows;
      void* args[] = {&g, &s, &mean, &rstd, &partial, &n_rows, &dd, &per_block};
      enqueue(device, kAddNormParams, blocks, 256, args);
      int nb = static_cast<int>(blocks), w = 2 * dd;
      void* sum_args[] = {&partial, &dparams, &nb, &w};
      enqueue(device, kColumnSums, (w + 255) / 256, 256, sum_args);
    }
  });
}

int64_t lpeft_add_norm_rows_per_block() { return kNormRowsPerBlock; }

// dx = g · s (bf16) and p = g · x (f32), each skipped when null; g, x bf16 like `out` above.
int lpeft_scale_backward_bf16(int device, const void* g, const void* x, const void* s, void* dx,
                              void* p, int64_t n, int64_t c, char* err, size_t len) {
  return launch(device, 2, const_cast<void*>(g), const_cast<void*>(x), const_cast<void*>(s), dx,
                p, n, c, err, len);
}

}  // extern "C"
