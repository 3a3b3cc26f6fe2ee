// Tensor wrapper of the CUDA Sinkhorn kernels: the iteration loop and small (B, N) vector algebra
// in ATen, the (B, N, M) passes in sinkhorn_cuda_kernel.cu. Same algorithm and outputs as
// sinkhorn_cpu.cpp. Compiled only when setup.py builds the CUDA extension (WITH_CUDA).
#ifdef WITH_CUDA
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/types.h>

#include <limits>

#include "sinkhorn.h"
#include "sinkhorn_cuda_kernel.h"

namespace defect_det {
namespace {

void check_launch(int code, const char* what) {
  TORCH_CHECK(code == 0, "sinkhorn CUDA kernel ", what, " failed to launch: ", cuda::error_string(code));
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> sinkhorn_forward_cuda(
    const at::Tensor& cost, double eps, const at::Tensor& log_a_in, const at::Tensor& log_b_in,
    const at::Tensor& a_in, const at::Tensor& row_valid_in, const at::Tensor& col_valid_in,
    int64_t max_iter, double tol) {
  TORCH_CHECK(cost.is_cuda() && cost.dim() == 3, "sinkhorn_forward_cuda: cost must be a CUDA (B, N, M) tensor");
  TORCH_CHECK(max_iter >= 1, "sinkhorn: max_iter must be >= 1");
  c10::cuda::CUDAGuard guard(cost.device());
  void* stream = c10::cuda::getCurrentCUDAStream().stream();
  const int64_t B = cost.size(0), N = cost.size(1), M = cost.size(2);
  auto row_valid = row_valid_in.to(at::kBool).contiguous();
  auto col_valid = col_valid_in.to(at::kBool).contiguous();
  auto log_a = log_a_in.contiguous(), log_b = log_b_in.contiguous();
  auto a = a_in.to(cost.scalar_type()).contiguous();
  auto L = masked_logits(cost, eps, row_valid, col_valid);
  auto LT = L.transpose(1, 2).contiguous();
  auto U = at::zeros({max_iter, B, N}, L.options());
  auto V = at::zeros({max_iter + 1, B, M}, L.options());
  auto err = at::zeros({B, N}, L.options());
  int64_t n_iter = 0;
  AT_DISPATCH_FLOATING_TYPES(L.scalar_type(), "sinkhorn_forward_cuda", [&] {
    for (int64_t t = 1; t <= max_iter; ++t) {
      const bool check = tol > 0 && t > 1;
      scalar_t* u_new = U[t - 1].data_ptr<scalar_t>();
      const scalar_t* u_old = check ? U[t - 2].data_ptr<scalar_t>() : nullptr;
      check_launch(cuda::lse_update<scalar_t>(L.data_ptr<scalar_t>(), B, N, M, V[t - 1].data_ptr<scalar_t>(),
                                              log_a.data_ptr<scalar_t>(), row_valid.data_ptr<bool>(),
                                              a.data_ptr<scalar_t>(), u_old, u_new,
                                              check ? err.data_ptr<scalar_t>() : nullptr, stream),
                   "lse_update (rows)");
      check_launch(cuda::lse_update<scalar_t>(LT.data_ptr<scalar_t>(), B, M, N, u_new, log_b.data_ptr<scalar_t>(),
                                              col_valid.data_ptr<bool>(), nullptr, nullptr,
                                              V[t].data_ptr<scalar_t>(), nullptr, stream),
                   "lse_update (columns)");
      n_iter = t;
      // Early exit costs one device-to-host copy per iteration, only when tol > 0.
      if (check && err.sum(1).max().item<double>() < tol) break;
    }
  });
  U = U.narrow(0, 0, n_iter).contiguous();
  V = V.narrow(0, 0, n_iter + 1).contiguous();
  auto plan = (L + U[n_iter - 1].unsqueeze(2) + V[n_iter].unsqueeze(1)).exp_();
  return std::make_tuple(plan, U, V);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> sinkhorn_backward_cuda(
    const at::Tensor& grad_plan, const at::Tensor& grad_u, const at::Tensor& grad_v,
    const at::Tensor& cost, double eps, const at::Tensor& plan, const at::Tensor& log_a_in,
    const at::Tensor& log_b_in, const at::Tensor& row_valid_in, const at::Tensor& col_valid_in,
    const at::Tensor& U_in, const at::Tensor& V_in) {
  TORCH_CHECK(cost.is_cuda(), "sinkhorn_backward_cuda: cost must be a CUDA tensor");
  c10::cuda::CUDAGuard guard(cost.device());
  void* stream = c10::cuda::getCurrentCUDAStream().stream();
  const int64_t B = cost.size(0), N = cost.size(1), M = cost.size(2);
  const int64_t T = U_in.size(0);
  TORCH_CHECK(T >= 1 && V_in.size(0) == T + 1, "sinkhorn_backward: U (T, B, N) and V (T+1, B, M)");
  auto row_valid = row_valid_in.to(at::kBool).contiguous();
  auto col_valid = col_valid_in.to(at::kBool).contiguous();
  auto rvf = row_valid.to(cost.scalar_type()), cvf = col_valid.to(cost.scalar_type());
  auto log_a = log_a_in.contiguous(), log_b = log_b_in.contiguous();
  auto U = U_in.contiguous(), V = V_in.contiguous();
  auto L = masked_logits(cost, eps, row_valid, col_valid);
  auto LT = L.transpose(1, 2).contiguous();
  auto PP = (grad_plan * plan).masked_fill_(plan == 0, 0);
  auto Lbar = PP.contiguous();
  auto LbarT = at::zeros({B, M, N}, L.options());
  auto ubar = ((PP.sum(2) + grad_u) * rvf).contiguous();
  auto vbar = ((PP.sum(1) + grad_v) * cvf).contiguous();
  auto gla = at::zeros({B, N}, L.options());
  auto glb = at::zeros({B, M}, L.options());
  auto acc_n = at::empty({B, N}, L.options());
  auto acc_m = at::empty({B, M}, L.options());
  AT_DISPATCH_FLOATING_TYPES(L.scalar_type(), "sinkhorn_backward_cuda", [&] {
    for (int64_t t = T; t >= 1; --t) {
      // Through v^t (see sinkhorn_cpu.cpp for the equations).
      glb.add_(vbar);
      auto beta_m = (V[t] - log_b).contiguous();
      check_launch(cuda::adjoint_rows<scalar_t>(L.data_ptr<scalar_t>(), B, N, M, U[t - 1].data_ptr<scalar_t>(),
                                                beta_m.data_ptr<scalar_t>(), vbar.data_ptr<scalar_t>(),
                                                row_valid.data_ptr<bool>(), Lbar.data_ptr<scalar_t>(),
                                                acc_n.data_ptr<scalar_t>(), stream),
                   "adjoint_rows (Q pass)");
      ubar.sub_(acc_n);
      // Through u^t.
      gla.add_(ubar);
      auto beta_n = (U[t - 1] - log_a).contiguous();
      check_launch(cuda::adjoint_rows<scalar_t>(LT.data_ptr<scalar_t>(), B, M, N, V[t - 1].data_ptr<scalar_t>(),
                                                beta_n.data_ptr<scalar_t>(), ubar.data_ptr<scalar_t>(),
                                                col_valid.data_ptr<bool>(), LbarT.data_ptr<scalar_t>(),
                                                acc_m.data_ptr<scalar_t>(), stream),
                   "adjoint_rows (R pass)");
      vbar.copy_(acc_m.neg());
      ubar.zero_();
    }
  });
  auto grad_cost = (Lbar + LbarT.transpose(1, 2)) / (-eps);
  auto valid = row_valid.unsqueeze(2).logical_and(col_valid.unsqueeze(1));
  grad_cost.masked_fill_(valid.logical_not(), 0);
  return std::make_tuple(grad_cost, gla * rvf, glb * cvf);
}

}  // namespace defect_det
#endif  // WITH_CUDA
