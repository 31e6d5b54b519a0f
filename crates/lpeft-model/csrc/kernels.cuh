// The shim's CUDA kernels (compiled at run time by NVRTC: scale_kernel.cpp), as the raw
// string literal that file includes: the estimation masks' bf16 scaling, the bf16 -> f32
// widening, and add + dropout + LayerNorm of mixed precision's residual stream.
R"CUDA(
typedef unsigned short u16;
// bf16 -> f32 as libtorch's operator float does it (cuda_bf16.hpp: cvt.f32.bf16 from sm_90 on,
// which may quiet NaNs; the plain shift before), so even NaN bits agree.
__device__ __forceinline__ float widen(unsigned int h) {
#if __CUDA_ARCH__ >= 900
  float f;
  asm("{ cvt.f32.bf16 %0, %1;}" : "=f"(f) : "h"((unsigned short)h));
  return f;
#else
  return __uint_as_float(h << 16);
#endif
}
// Round to nearest even, as cvt.rn.bf16.f32 (NaN becomes the canonical 0x7fff).
__device__ __forceinline__ unsigned int narrow(float f) {
  unsigned int u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fffu;
  return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}
__device__ __forceinline__ unsigned int pack(float lo, float hi) {
  return narrow(lo) | (narrow(hi) << 16);
}

// out[i] = x[i] * s[i % c], eight elements a thread (c % 8 == 0, 16-byte aligned rows).
extern "C" __global__ void lpeft_scale8(const uint4* x, const float* s, uint4* out,
                                        long long n8, int c8) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n8;
       i += (long long)gridDim.x * blockDim.x) {
    const float* sc = s + (int)(i % c8) * 8;
    uint4 v = x[i];
    unsigned int w[4] = {v.x, v.y, v.z, v.w};
    unsigned int o[4];
    for (int k = 0; k < 4; ++k)
      o[k] = pack(widen(w[k] & 0xffffu) * sc[2 * k], widen(w[k] >> 16) * sc[2 * k + 1]);
    out[i] = make_uint4(o[0], o[1], o[2], o[3]);
  }
}

// The same, one element a thread (any c).
extern "C" __global__ void lpeft_scale1(const u16* x, const float* s, u16* out, long long n,
                                        int c) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
       i += (long long)gridDim.x * blockDim.x)
    out[i] = (u16)narrow(widen(x[i]) * s[i % c]);
}

// dx[i] = g[i] * s[i % c] in bf16 and p[i] = g[i] * x[i] in f32, either may be null;
// eight elements a thread.
extern "C" __global__ void lpeft_scale_back8(const uint4* g, const uint4* x, const float* s,
                                             uint4* dx, float4* p, long long n8, int c8) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n8;
       i += (long long)gridDim.x * blockDim.x) {
    uint4 gv = g[i];
    unsigned int gw[4] = {gv.x, gv.y, gv.z, gv.w};
    if (dx) {
      const float* sc = s + (int)(i % c8) * 8;
      unsigned int o[4];
      for (int k = 0; k < 4; ++k)
        o[k] = pack(widen(gw[k] & 0xffffu) * sc[2 * k], widen(gw[k] >> 16) * sc[2 * k + 1]);
      dx[i] = make_uint4(o[0], o[1], o[2], o[3]);
    }
    if (p) {
      uint4 xv = x[i];
      unsigned int xw[4] = {xv.x, xv.y, xv.z, xv.w};
      float f[8];
      for (int k = 0; k < 4; ++k) {
        f[2 * k] = widen(gw[k] & 0xffffu) * widen(xw[k] & 0xffffu);
        f[2 * k + 1] = widen(gw[k] >> 16) * widen(xw[k] >> 16);
      }
      p[2 * i] = make_float4(f[0], f[1], f[2], f[3]);
      p[2 * i + 1] = make_float4(f[4], f[5], f[6], f[7]);
    }
  }
}

extern "C" __global__ void lpeft_scale_back1(const u16* g, const u16* x, const float* s,
                                             u16* dx, float* p, long long n, int c) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
       i += (long long)gridDim.x * blockDim.x) {
    float gi = widen(g[i]);
    if (dx) dx[i] = (u16)narrow(gi * s[i % c]);
    if (p) p[i] = gi * widen(x[i]);
  }
}

// out = float(x), exact: libtorch's bf16 -> f32 copy takes its unvectorised casting path.
extern "C" __global__ void lpeft_widen8(const uint4* x, float4* out, long long n8, int unused) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n8;
       i += (long long)gridDim.x * blockDim.x) {
    uint4 v = x[i];
    out[2 * i] = make_float4(widen(v.x & 0xffffu), widen(v.x >> 16), widen(v.y & 0xffffu),
                             widen(v.y >> 16));
    out[2 * i + 1] = make_float4(widen(v.z & 0xffffu), widen(v.z >> 16), widen(v.w & 0xffffu),
                                 widen(v.w >> 16));
  }
}

extern "C" __global__ void lpeft_widen1(const u16* x, float* out, long long n, int unused) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
       i += (long long)gridDim.x * blockDim.x)
    out[i] = widen(x[i]);
}
// ---- add + dropout + LayerNorm (mixed precision's residual stream) ----
// One block per row in the forward, a fixed run of rows per block in the backward; thread t
// holds columns t, t + blockDim.x, ... (at most kCols of them). Every sum is taken in one fixed
// order (a butterfly within warps, then the warps in turn), so results are the same every run.
#define kCols 8

// (a, b) summed over the block, every thread getting the same values; red: 64 floats of
// shared memory, free on entry.
__device__ __forceinline__ float2 block_sum2(float a, float b, float* red) {
  for (int o = 16; o > 0; o >>= 1) {
    a += __shfl_xor_sync(0xffffffffu, a, o);
    b += __shfl_xor_sync(0xffffffffu, b, o);
  }
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  if (lane == 0) {
    red[warp] = a;
    red[32 + warp] = b;
  }
  __syncthreads();
  a = 0.f;
  b = 0.f;
  for (int w = 0; w < warps; ++w) {
    a += red[w];
    b += red[32 + w];
  }
  __syncthreads();  // red is free again
  return make_float2(a, b);
}

__device__ __forceinline__ float load_x(const void* x, int bf16, long long i) {
  return bf16 ? widen(((const u16*)x)[i]) : ((const float*)x)[i];
}

// s = drop(x) + r (x f32 or bf16; keep-mask m, or none when null, kept values times `scale`),
// y = (s - mean) * rstd * gamma + beta over each row of d; s, mean and rstd kept for the
// backward. The variance is the mean squared deviation (two passes over registers).
extern "C" __global__ void lpeft_add_norm(const void* x, int x_bf16, const float* r,
                                          const unsigned char* m, float scale,
                                          const float* gamma, const float* beta, float eps,
                                          float* s, float* y, float* mean, float* rstd, int d) {
  __shared__ float red[64];
  long long base = (long long)blockIdx.x * d;
  float v[kCols];
  float sum = 0.f;
#pragma unroll
  for (int k = 0; k < kCols; ++k) {
    int c = threadIdx.x + k * blockDim.x;
    if (c < d) {
      float xv = load_x(x, x_bf16, base + c);
      if (m) xv = m[base + c] ? xv * scale : 0.f;
      v[k] = xv + r[base + c];
      s[base + c] = v[k];
      sum += v[k];
    }
  }
  float mu = block_sum2(sum, 0.f, red).x / d;
  float sq = 0.f;
#pragma unroll
  for (int k = 0; k < kCols; ++k) {
    int c = threadIdx.x + k * blockDim.x;
    if (c < d) sq += (v[k] - mu) * (v[k] - mu);
  }
  float rs = rsqrtf(block_sum2(sq, 0.f, red).x / d + eps);
#pragma unroll
  for (int k = 0; k < kCols; ++k) {
    int c = threadIdx.x + k * blockDim.x;
    if (c < d) y[base + c] = (v[k] - mu) * rs * gamma[c] + beta[c];
  }
  if (threadIdx.x == 0) {
    mean[blockIdx.x] = mu;
    rstd[blockIdx.x] = rs;
  }
}

// The backward for upstream g, one row a block: ds = rstd * (dy - mean(dy) - x^ * mean(dy * x^))
// with dy = g * gamma and x^ = (s - mean) * rstd; dr = ds (skipped when null) and dx = ds
// through the dropout mask, in x's type (skipped when null). Few registers (the row's g and x^
// only), so that enough blocks share an SM to keep memory busy.
extern "C" __global__ void lpeft_add_norm_back(const float* g, const float* s, const float* mean,
                                               const float* rstd, const float* gamma,
                                               const unsigned char* m, float scale, float* dr,
                                               void* dx, int dx_bf16, int d) {
  __shared__ float red[64];
  long long row = blockIdx.x, base = row * d;
  float mu = mean[row], rs = rstd[row];
  float gv[kCols], xh[kCols];
  bool keep[kCols];  // read with g and s, so that no load waits after the reduction
  float a = 0.f, b = 0.f;
#pragma unroll
  for (int k = 0; k < kCols; ++k) {
    int c = threadIdx.x + k * blockDim.x;
    if (c < d) {
      gv[k] = g[base + c] * gamma[c];
      xh[k] = (s[base + c] - mu) * rs;
      keep[k] = m == nullptr || m[base + c] != 0;
      a += gv[k];
      b += gv[k] * xh[k];
    }
  }
  float2 ab = block_sum2(a, b, red);
  float c1 = ab.x / d, c2 = ab.y / d;
#pragma unroll
  for (int k = 0; k < kCols; ++k) {
    int c = threadIdx.x + k * blockDim.x;
    if (c < d) {
      float ds = rs * (gv[k] - c1 - xh[k] * c2);
      if (dr) dr[base + c] = ds;
      if (dx) {
        float v = m ? (keep[k] ? ds * scale : 0.f) : ds;
        if (dx_bf16)
          ((u16*)dx)[base + c] = (u16)narrow(v);
        else
          ((float*)dx)[base + c] = v;
      }
    }
  }
}

// Column sums of g * x^ and g over `per_block` rows a block, into partial[block][0 / 1][d]
// (for ∂γ and ∂β, which lpeft_column_sums adds up); thread t takes columns t, t + blockDim.x, ...
extern "C" __global__ void lpeft_add_norm_params(const float* g, const float* s, const float* mean,
                                                 const float* rstd, float* partial,
                                                 long long rows, int d, int per_block) {
  long long first = (long long)blockIdx.x * per_block;
  long long last = first + per_block < rows ? first + per_block : rows;
  for (int c = threadIdx.x; c < d; c += blockDim.x) {
    float pg = 0.f, pb = 0.f;
    for (long long row = first; row < last; ++row) {
      float gv = g[row * d + c];
      pg += gv * ((s[row * d + c] - mean[row]) * rstd[row]);
      pb += gv;
    }
    partial[(long long)blockIdx.x * 2 * d + c] = pg;
    partial[(long long)blockIdx.x * 2 * d + d + c] = pb;
  }
}

// out[c] = sum over b < blocks of partial[b][c], in order of b (w columns a row).
extern "C" __global__ void lpeft_column_sums(const float* partial, float* out, int blocks, int w) {
  int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= w) return;
  float acc = 0.f;
  for (int b = 0; b < blocks; ++b) acc += partial[(long long)b * w + c];
  out[c] = acc;
}
)CUDA"
