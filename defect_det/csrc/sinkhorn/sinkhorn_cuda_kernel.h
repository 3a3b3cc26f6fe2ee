// Torch-free interface of the CUDA Sinkhorn kernels (sinkhorn_cuda_kernel.cu): plain pointers,
// float / double, row-major (B, R, C) matrices. Compiled by nvcc without any torch header, so that
// .ci/run can compile-check it with any nvcc; the tensor wrapper is sinkhorn_cuda.cpp.
#pragma once
#include <cstdint>

namespace defect_det {
namespace cuda {

// For every batch element bi and valid row r of X (B, R, C), with beta (B, C), logm / w / old (B, R):
//   out[bi, r] = logm[bi, r] - LSE_c(X[bi, r, c] + beta[bi, c])
//   err[bi, r] = w[bi, r] * |exp(old[bi, r] - out[bi, r]) - 1|   (if err != nullptr)
// out = err = 0 at invalid rows. One thread block per (bi, r), online (streaming-max) LSE.
// Both launchers return the launch's error code (cudaError_t as int, 0 = success); see error_string.
template <typename T>
int lse_update(const T* X, int64_t B, int64_t R, int64_t C, const T* beta, const T* logm,
                const bool* valid, const T* w, const T* old, T* out, T* err, void* stream);

// For every valid row: e = exp(X[bi, r, c] + alpha[bi, r] + beta[bi, c]),
//   Xbar[bi, r, c] -= wcol[bi, c] * e;   acc[bi, r] = sum_c wcol[bi, c] * e   (0 at invalid rows).
template <typename T>
int adjoint_rows(const T* X, int64_t B, int64_t R, int64_t C, const T* alpha, const T* beta,
                  const T* wcol, const bool* valid, T* Xbar, T* acc, void* stream);

// cudaGetErrorString of a code returned above.
const char* error_string(int code);

}  // namespace cuda
}  // namespace defect_det
