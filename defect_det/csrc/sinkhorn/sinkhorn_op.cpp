// Registration of the Sinkhorn op: schemas in TORCH_LIBRARY(defect_det), kernels per device.
// Callable as torch.ops.defect_det.sinkhorn_forward / sinkhorn_backward once defect_det._C is loaded.
#include <torch/library.h>

#include "sinkhorn.h"

TORCH_LIBRARY(defect_det, m) {
  m.def(
      "sinkhorn_forward(Tensor cost, float eps, Tensor log_a, Tensor log_b, Tensor a, "
      "Tensor row_valid, Tensor col_valid, int max_iter, float tol) -> (Tensor, Tensor, Tensor)");
  m.def(
      "sinkhorn_backward(Tensor grad_plan, Tensor grad_u, Tensor grad_v, Tensor cost, float eps, "
      "Tensor plan, Tensor log_a, Tensor log_b, Tensor row_valid, Tensor col_valid, Tensor U, "
      "Tensor V) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(defect_det, CPU, m) {
  m.impl("sinkhorn_forward", &defect_det::sinkhorn_forward_cpu);
  m.impl("sinkhorn_backward", &defect_det::sinkhorn_backward_cpu);
}

#ifdef WITH_CUDA
TORCH_LIBRARY_IMPL(defect_det, CUDA, m) {
  m.impl("sinkhorn_forward", &defect_det::sinkhorn_forward_cuda);
  m.impl("sinkhorn_backward", &defect_det::sinkhorn_backward_cuda);
}
#endif
