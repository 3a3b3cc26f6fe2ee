// Batched, masked, log-domain Sinkhorn-Knopp op of defect_det (see
// projects/SinkhornNMS/SINKHORN_OP.md). Declarations shared by the CPU kernel, the CUDA wrapper
// and the op registration.
#pragma once
#include <torch/types.h>

#include <limits>
#include <tuple>

namespace defect_det {

// L = -C / eps, -inf where the row or column is invalid. (B, N, M), contiguous, on cost's device
// (shared by the CPU kernel and the CUDA wrapper).
inline at::Tensor masked_logits(const at::Tensor& cost, double eps, const at::Tensor& row_valid,
                                const at::Tensor& col_valid) {
  auto valid = row_valid.unsqueeze(2).logical_and(col_valid.unsqueeze(1));
  return (cost / (-eps)).masked_fill(valid.logical_not(), -std::numeric_limits<double>::infinity())
      .contiguous();
}

// Forward. cost (B, N, M); log_a (B, N), log_b (B, M) (0 at invalid entries); a (B, N) marginal
// (only used by the early-exit test); row_valid (B, N), col_valid (B, M) bool.
// Returns plan (B, N, M), U (T, B, N) = u^1..u^T and V (T + 1, B, M) = v^0..v^T, the scaled dual
// potentials (u = f / eps, v = g / eps) of every iteration; T = iterations run.
std::tuple<at::Tensor, at::Tensor, at::Tensor> sinkhorn_forward_cpu(
    const at::Tensor& cost, double eps, const at::Tensor& log_a, const at::Tensor& log_b,
    const at::Tensor& a, const at::Tensor& row_valid, const at::Tensor& col_valid,
    int64_t max_iter, double tol);

// Backward of the unrolled T-iteration map. grad_plan (B, N, M); grad_u (B, N), grad_v (B, M):
// adjoints of the final scaled duals u^T, v^T. Returns (grad_cost (B, N, M), grad_log_a (B, N),
// grad_log_b (B, M)).
std::tuple<at::Tensor, at::Tensor, at::Tensor> sinkhorn_backward_cpu(
    const at::Tensor& grad_plan, const at::Tensor& grad_u, const at::Tensor& grad_v,
    const at::Tensor& cost, double eps, const at::Tensor& plan, const at::Tensor& log_a,
    const at::Tensor& log_b, const at::Tensor& row_valid, const at::Tensor& col_valid,
    const at::Tensor& U, const at::Tensor& V);

#ifdef WITH_CUDA
std::tuple<at::Tensor, at::Tensor, at::Tensor> sinkhorn_forward_cuda(
    const at::Tensor& cost, double eps, const at::Tensor& log_a, const at::Tensor& log_b,
    const at::Tensor& a, const at::Tensor& row_valid, const at::Tensor& col_valid,
    int64_t max_iter, double tol);
std::tuple<at::Tensor, at::Tensor, at::Tensor> sinkhorn_backward_cuda(
    const at::Tensor& grad_plan, const at::Tensor& grad_u, const at::Tensor& grad_v,
    const at::Tensor& cost, double eps, const at::Tensor& plan, const at::Tensor& log_a,
    const at::Tensor& log_b, const at::Tensor& row_valid, const at::Tensor& col_valid,
    const at::Tensor& U, const at::Tensor& V);
#endif

}  // namespace defect_det
