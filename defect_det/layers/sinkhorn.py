"""Public batched Sinkhorn-Knopp op: ``defect_det.layers.sinkhorn``.

Dispatches to the compiled kernels of ``defect_det._C`` (``torch.ops.defect_det.sinkhorn_forward``
/ ``sinkhorn_backward``, CPU or CUDA by the device of ``cost``) and falls back, with one warning per
process, to the pure-PyTorch reference (:mod:`defect_det.layers.sinkhorn_reference`) when ``_C`` is
not built. Both compute the same iterations; the compiled backward is the exact gradient of the
unrolled iterations, recomputed from the stored dual potentials with O(B * N * M) memory
(``projects/SinkhornNMS/SINKHORN_OP.md``).
"""
import warnings
from typing import Optional

import torch

from .sinkhorn_reference import SinkhornResult, sinkhorn_reference, validate_sinkhorn_inputs

__all__ = ["sinkhorn", "compiled_sinkhorn_available"]

_C_STATE = {"loaded": None, "warned": False}


def _load_C() -> bool:
    """Import ``defect_det._C`` once; True when its operators are registered."""
    if _C_STATE["loaded"] is None:
        try:
            from defect_det import _C  # noqa: F401  (registers torch.ops.defect_det.*)

            _C_STATE["loaded"] = hasattr(torch.ops.defect_det, "sinkhorn_forward")
        except ImportError:
            _C_STATE["loaded"] = False
    return _C_STATE["loaded"]


def compiled_sinkhorn_available(device: str = "cpu") -> bool:
    """Whether ``defect_det._C`` is built (and, for ``device="cuda"``, built with CUDA)."""
    if not _load_C():
        return False
    if torch.device(device).type == "cuda":
        from defect_det import _C

        return bool(getattr(_C, "WITH_CUDA", 0))
    return True


class _SinkhornFunction(torch.autograd.Function):
    """
    Forward/backward through ``torch.ops.defect_det``. Inputs are already validated:
    cost (B, N, M); a (B, N), b (B, M) filled marginals (0 at invalid entries); row_valid (B, N),
    col_valid (B, M) bool. Outputs plan (B, N, M), f (B, N), g (B, M), n_iter (0-dim int64,
    not differentiable). Saves cost, plan, log-marginals, masks and the duals of every iteration
    (T * B * (N + M)), never a per-iteration (B, N, M) tensor.
    """

    @staticmethod
    def forward(ctx, cost, a, b, row_valid, col_valid, eps, max_iter, tol):
        tiny = torch.finfo(cost.dtype).tiny
        log_a = torch.where(row_valid, a.clamp_min(tiny).log(), torch.zeros_like(a))
        log_b = torch.where(col_valid, b.clamp_min(tiny).log(), torch.zeros_like(b))
        plan, U, V = torch.ops.defect_det.sinkhorn_forward(
            cost.contiguous(), eps, log_a, log_b, a.contiguous(), row_valid, col_valid, max_iter, tol
        )
        ctx.save_for_backward(cost, a, plan, log_a, log_b, row_valid, col_valid, U, V)
        ctx.eps = eps
        n_iter = torch.tensor(U.shape[0], dtype=torch.int64)
        ctx.mark_non_differentiable(n_iter)
        return plan, U[-1] * eps, V[-1] * eps, n_iter

    @staticmethod
    def backward(ctx, grad_plan, grad_f, grad_g, _grad_n):
        cost, a, plan, log_a, log_b, row_valid, col_valid, U, V = ctx.saved_tensors
        eps = ctx.eps
        grad_plan = torch.zeros_like(plan) if grad_plan is None else grad_plan.contiguous()
        grad_u = torch.zeros_like(log_a) if grad_f is None else grad_f * eps
        grad_v = torch.zeros_like(log_b) if grad_g is None else grad_g * eps
        grad_cost, grad_log_a, grad_log_b = torch.ops.defect_det.sinkhorn_backward(
            grad_plan, grad_u.contiguous(), grad_v.contiguous(), cost.contiguous(), eps, plan,
            log_a, log_b, row_valid, col_valid, U, V,
        )
        b = torch.exp(log_b)  # b at valid columns; the adjoint is 0 elsewhere
        grad_a = torch.where(row_valid, grad_log_a / a.clamp_min(torch.finfo(a.dtype).tiny), torch.zeros_like(a))
        grad_b = torch.where(col_valid, grad_log_b / b, torch.zeros_like(b))
        return (
            grad_cost if ctx.needs_input_grad[0] else None,
            grad_a if ctx.needs_input_grad[1] else None,
            grad_b if ctx.needs_input_grad[2] else None,
            None, None, None, None, None,
        )


def sinkhorn(
    cost: torch.Tensor,
    eps: float,
    a: Optional[torch.Tensor] = None,
    b: Optional[torch.Tensor] = None,
    row_mask: Optional[torch.Tensor] = None,
    col_mask: Optional[torch.Tensor] = None,
    max_iter: int = 100,
    tol: float = 0.0,
    impl: str = "auto",
    validate: bool = True,
) -> SinkhornResult:
    """Entropy-regularised optimal transport, batched and masked, in the log domain.

    Args:
        cost: (B, N, M) float32/float64 cost.
        eps: entropic regularisation (> 0); stable down to 1e-3 for costs of order 1.
        a, b: optional (B, N) / (B, M) marginals (default uniform over valid entries, mass 1).
        row_mask, col_mask: optional (B, N) / (B, M) bool, True = valid (padding otherwise).
        max_iter: iterations; tol: early-exit threshold on the row-marginal L1 error (0 = off).
        impl: "auto" (compiled ``defect_det._C`` if built, else the reference with one warning),
            "cpp" (compiled kernel, error if unavailable; CPU or CUDA by ``cost.device``) or
            "reference" (pure PyTorch, autograd through the unrolled iterations).
        validate: check the inputs (:func:`validate_sinkhorn_inputs`). ``False`` is for callers that
            build the problem themselves and pay the ~30 small checking ops per call otherwise (Sinkhorn
            NMS): then ``a``, ``b``, ``row_mask`` and ``col_mask`` must all be given, the masks exactly
            the entries of positive mass, the marginals 0 elsewhere, every problem empty or with equal
            masses, and the cost finite; nothing is checked (compiled kernels only).
    Returns:
        SinkhornResult(plan (B, N, M), f (B, N), g (B, M), n_iter). Differentiable w.r.t.
        ``cost``, ``a`` and ``b``. Raises ValueError naming the argument on invalid input.
    """
    if impl not in ("auto", "cpp", "reference"):
        raise ValueError(f"sinkhorn: `impl` must be 'auto', 'cpp' or 'reference', got {impl!r}")
    if impl == "reference":
        return sinkhorn_reference(cost, eps, a, b, row_mask, col_mask, max_iter, tol)
    if not validate and compiled_sinkhorn_available(cost.device.type):
        plan, f, g, n_iter = _SinkhornFunction.apply(
            cost, a, b, row_mask, col_mask, float(eps), int(max_iter), float(tol)
        )
        return SinkhornResult(plan, f, g, int(n_iter))
    if not compiled_sinkhorn_available(cost.device.type if isinstance(cost, torch.Tensor) else "cpu"):
        if impl == "cpp":
            raise RuntimeError("sinkhorn: impl='cpp' but defect_det._C is not built for this device")
        if not _C_STATE["warned"]:
            _C_STATE["warned"] = True
            warnings.warn(
                "defect_det._C is not built (run `pip install -e . --no-build-isolation`); "
                "sinkhorn falls back to the slower pure-PyTorch reference",
                RuntimeWarning,
            )
        return sinkhorn_reference(cost, eps, a, b, row_mask, col_mask, max_iter, tol)
    a_full, b_full, row_valid, col_valid = validate_sinkhorn_inputs(
        cost, eps, a, b, row_mask, col_mask, max_iter, tol
    )
    plan, f, g, n_iter = _SinkhornFunction.apply(
        cost, a_full, b_full, row_valid, col_valid, float(eps), int(max_iter), float(tol)
    )
    return SinkhornResult(plan, f, g, int(n_iter))
