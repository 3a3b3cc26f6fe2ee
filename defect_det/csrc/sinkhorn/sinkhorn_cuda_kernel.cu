// CUDA kernels of the Sinkhorn op; no torch headers (see sinkhorn_cuda_kernel.h).
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "sinkhorn_cuda_kernel.h"

namespace defect_det {
namespace cuda {
namespace {

constexpr int kThreads = 256;

template <typename T>
__device__ __forceinline__ T neg_inf() {
  return -INFINITY;
}

// Merge two (max, sum) log-sum-exp partials: value = m + log(s).
template <typename T>
__device__ __forceinline__ void lse_merge(T& m, T& s, T m2, T s2) {
  if (m2 == neg_inf<T>()) return;
  if (m == neg_inf<T>()) {
    m = m2;
    s = s2;
    return;
  }
  if (m2 > m) {
    s = s * exp(m - m2) + s2;
    m = m2;
  } else {
    s = s + s2 * exp(m2 - m);
  }
}

template <typename T>
__device__ __forceinline__ void block_lse(T& m, T& s) {
  __shared__ T sm[kThreads / 32], ss[kThreads / 32];
  for (int off = 16; off > 0; off >>= 1) {
    T m2 = __shfl_down_sync(0xffffffffu, m, off);
    T s2 = __shfl_down_sync(0xffffffffu, s, off);
    lse_merge(m, s, m2, s2);
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) {
    sm[warp] = m;
    ss[warp] = s;
  }
  __syncthreads();
  if (warp == 0) {
    m = lane < kThreads / 32 ? sm[lane] : neg_inf<T>();
    s = lane < kThreads / 32 ? ss[lane] : T(0);
    for (int off = 16; off > 0; off >>= 1) {
      T m2 = __shfl_down_sync(0xffffffffu, m, off);
      T s2 = __shfl_down_sync(0xffffffffu, s, off);
      lse_merge(m, s, m2, s2);
    }
  }
}

template <typename T>
__device__ __forceinline__ T block_sum(T v) {
  __shared__ T sh[kThreads / 32];
  for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < kThreads / 32 ? sh[lane] : T(0);
    for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
  }
  return v;
}

template <typename T>
__global__ void lse_update_kernel(const T* __restrict__ X, int64_t R, int64_t C,
                                  const T* __restrict__ beta, const T* __restrict__ logm,
                                  const bool* __restrict__ valid, const T* __restrict__ w,
                                  const T* __restrict__ old, T* __restrict__ out, T* __restrict__ err) {
  const int64_t br = blockIdx.x;  // (batch, row)
  const int64_t bi = br / R;
  if (!valid[br]) {
    if (threadIdx.x == 0) {
      out[br] = T(0);
      if (err) err[br] = T(0);
    }
    return;
  }
  const T* x = X + br * C;
  const T* bc = beta + bi * C;
  T m = neg_inf<T>(), s = T(0);
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    const T y = x[c] + bc[c];
    if (y == neg_inf<T>()) continue;
    if (y > m) {
      s = (m == neg_inf<T>() ? T(0) : s * exp(m - y)) + T(1);
      m = y;
    } else {
      s += exp(y - m);
    }
  }
  block_lse(m, s);
  if (threadIdx.x == 0) {
    const T val = logm[br] - (m + log(s));
    out[br] = val;
    if (err) err[br] = old ? w[br] * fabs(exp(old[br] - val) - T(1)) : T(0);
  }
}

template <typename T>
__global__ void adjoint_rows_kernel(const T* __restrict__ X, int64_t R, int64_t C,
                                    const T* __restrict__ alpha, const T* __restrict__ beta,
                                    const T* __restrict__ wcol, const bool* __restrict__ valid,
                                    T* __restrict__ Xbar, T* __restrict__ acc) {
  const int64_t br = blockIdx.x;
  const int64_t bi = br / R;
  if (!valid[br]) {
    if (threadIdx.x == 0) acc[br] = T(0);
    return;
  }
  const T* x = X + br * C;
  const T* bc = beta + bi * C;
  const T* wc = wcol + bi * C;
  T* xb = Xbar + br * C;
  const T al = alpha[br];
  T sum = T(0);
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    const T t = wc[c] * exp(x[c] + al + bc[c]);
    xb[c] -= t;
    sum += t;
  }
  sum = block_sum(sum);
  if (threadIdx.x == 0) acc[br] = sum;
}

}  // namespace

template <typename T>
int lse_update(const T* X, int64_t B, int64_t R, int64_t C, const T* beta, const T* logm,
                const bool* valid, const T* w, const T* old, T* out, T* err, void* stream) {
  if (B * R == 0) return 0;
  lse_update_kernel<T><<<static_cast<unsigned int>(B * R), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      X, R, C, beta, logm, valid, w, old, out, err);
  return static_cast<int>(cudaGetLastError());
}

template <typename T>
int adjoint_rows(const T* X, int64_t B, int64_t R, int64_t C, const T* alpha, const T* beta,
                  const T* wcol, const bool* valid, T* Xbar, T* acc, void* stream) {
  if (B * R == 0) return 0;
  adjoint_rows_kernel<T><<<static_cast<unsigned int>(B * R), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      X, R, C, alpha, beta, wcol, valid, Xbar, acc);
  return static_cast<int>(cudaGetLastError());
}

const char* error_string(int code) { return cudaGetErrorString(static_cast<cudaError_t>(code)); }

template int lse_update<float>(const float*, int64_t, int64_t, int64_t, const float*, const float*,
                                const bool*, const float*, const float*, float*, float*, void*);
template int lse_update<double>(const double*, int64_t, int64_t, int64_t, const double*,
                                 const double*, const bool*, const double*, const double*, double*,
                                 double*, void*);
template int adjoint_rows<float>(const float*, int64_t, int64_t, int64_t, const float*,
                                  const float*, const float*, const bool*, float*, float*, void*);
template int adjoint_rows<double>(const double*, int64_t, int64_t, int64_t, const double*,
                                   const double*, const double*, const bool*, double*, double*,
                                   void*);

}  // namespace cuda
}  // namespace defect_det
