"""Pure-PyTorch reference of the batched, masked, log-domain Sinkhorn-Knopp solver.

Readable on purpose: it is the specification the compiled kernels (``defect_det._C``) are tested
against, and the fallback when ``_C`` is not built. Its gradient is plain autograd through the
unrolled iterations (memory O(iterations * B * N * M)); the compiled op computes the *same* gradient
with O(B * N * M) memory by recomputing each iteration's softmax from the stored dual potentials.

Problem, per batch element (``n`` valid rows, ``m`` valid columns)::

    P = argmin_P  <P, C> - eps * H(P)   s.t.  P 1 = a,  P^T 1 = b,  P >= 0

Log-domain iterations (``f``, ``g`` are the dual potentials, ``g^0 = 0``)::

    f_i <- eps * log a_i - eps * LSE_j((g_j - C_ij) / eps)
    g_j <- eps * log b_j - eps * LSE_i((f_i - C_ij) / eps)
    P_ij = exp((f_i + g_j - C_ij) / eps)

Early exit (``tol > 0``): computing ``f^t`` also yields the row-marginal error of the plan of
``(f^{t-1}, g^{t-1})`` for free: ``err = sum_i a_i |exp((f^{t-1}_i - f^t_i) / eps) - 1|``. When the
largest such error over the batch is ``< tol`` the solver finishes iteration ``t`` (its ``g`` update)
and stops; so at most ``max_iter`` iterations run and the column marginals are always exact.
"""
from typing import NamedTuple, Optional, Tuple

import torch

__all__ = ["SinkhornResult", "sinkhorn_reference", "validate_sinkhorn_inputs"]

# Finite stand-in for -inf on masked cost entries: keeps autograd free of inf - inf = NaN.
MASKED_LOGIT = -1e30


class SinkhornResult(NamedTuple):
    """Output of :func:`defect_det.layers.sinkhorn`.

    plan:   (B, N, M) transport plan; exactly 0 at masked rows/columns and in empty problems.
    f:      (B, N) row dual potential; 0 at masked rows.
    g:      (B, M) column dual potential; 0 at masked columns.
    n_iter: int, iterations run (<= max_iter; fewer when ``tol`` triggered the early exit).
    """

    plan: torch.Tensor
    f: torch.Tensor
    g: torch.Tensor
    n_iter: int


def _check_finite(name: str, t: torch.Tensor) -> None:
    # The sum is NaN/inf whenever an element is (and, rarely, when finite values overflow it): one
    # reduction instead of an elementwise test, which runs only to confirm.
    if not torch.isfinite(t.sum()) and not torch.isfinite(t).all():
        raise ValueError(f"sinkhorn: `{name}` contains NaN or inf")


def validate_sinkhorn_inputs(
    cost: torch.Tensor,
    eps: float,
    a: Optional[torch.Tensor] = None,
    b: Optional[torch.Tensor] = None,
    row_mask: Optional[torch.Tensor] = None,
    col_mask: Optional[torch.Tensor] = None,
    max_iter: int = 100,
    tol: float = 0.0,
    mass_rtol: float = 1e-4,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Check arguments, fill defaults and return ``(a, b, row_valid, col_valid)``.

    Shapes: cost (B, N, M) float32/float64; a (B, N), b (B, M) non-negative marginals (default:
    uniform over valid rows/columns, each summing to 1; explicit ones must not sum to 0 where the
    mask leaves entries valid); row_mask (B, N) / col_mask (B, M) bool,
    True = valid. A row whose marginal is 0 counts as masked. A problem with no valid row or no
    valid column is *empty*: its plan and duals are 0. Non-empty problems must have
    ``sum(a) == sum(b)`` (relative tolerance ``mass_rtol``).

    Raises ValueError naming the offending argument for NaN/inf costs or marginals, mismatched
    shapes/dtypes/devices, negative or zero-sum marginals, ``eps <= 0``, ``max_iter < 1``, ``tol < 0``.
    """
    if not isinstance(cost, torch.Tensor) or cost.dim() != 3:
        raise ValueError(f"sinkhorn: `cost` must be a (B, N, M) tensor, got {getattr(cost, 'shape', type(cost))}")
    if cost.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"sinkhorn: `cost` must be float32 or float64, got {cost.dtype}")
    try:
        eps = float(eps)
    except (TypeError, ValueError):
        raise ValueError(f"sinkhorn: `eps` must be a positive number, got {eps!r}") from None
    if not eps > 0 or eps != eps or eps == float("inf"):
        raise ValueError(f"sinkhorn: `eps` must be a finite number > 0, got {eps}")
    if int(max_iter) < 1:
        raise ValueError(f"sinkhorn: `max_iter` must be >= 1, got {max_iter}")
    if not float(tol) >= 0:
        raise ValueError(f"sinkhorn: `tol` must be >= 0, got {tol}")
    _check_finite("cost", cost)
    B, N, M = cost.shape

    def _mask(name, m, n):
        if m is None:
            return torch.ones(B, n, dtype=torch.bool, device=cost.device)
        if not isinstance(m, torch.Tensor) or tuple(m.shape) != (B, n):
            raise ValueError(f"sinkhorn: `{name}` must have shape {(B, n)}, got {tuple(getattr(m, 'shape', ()))}")
        if m.device != cost.device:
            raise ValueError(f"sinkhorn: `{name}` is on {m.device}, `cost` on {cost.device}")
        return m.to(torch.bool)

    row_valid = _mask("row_mask", row_mask, N)
    col_valid = _mask("col_mask", col_mask, M)

    def _marginal(name, x, valid, n):
        if x is None:
            cnt = valid.sum(1, keepdim=True).clamp_min(1).to(cost.dtype)
            return valid.to(cost.dtype) / cnt
        if not isinstance(x, torch.Tensor) or tuple(x.shape) != (B, n):
            raise ValueError(f"sinkhorn: `{name}` must have shape {(B, n)}, got {tuple(getattr(x, 'shape', ()))}")
        if x.dtype != cost.dtype:
            raise ValueError(f"sinkhorn: `{name}` has dtype {x.dtype}, `cost` has {cost.dtype}")
        if x.device != cost.device:
            raise ValueError(f"sinkhorn: `{name}` is on {x.device}, `cost` on {cost.device}")
        _check_finite(name, x)
        if (x < 0).any():
            raise ValueError(f"sinkhorn: `{name}` has negative entries")
        return x * valid.to(x.dtype)

    explicit = {"a": a is not None, "b": b is not None}
    a = _marginal("a", a, row_valid, N)
    b = _marginal("b", b, col_valid, M)
    sa, sb = a.sum(1), b.sum(1)
    for name, s, valid in (("a", sa, row_valid), ("b", sb, col_valid)):
        if not explicit[name]:
            continue
        zero = valid.any(1) & (s <= 0)
        if zero.any():
            i = int(zero.nonzero()[0])
            raise ValueError(f"sinkhorn: `{name}` sums to 0 over the valid entries of problem {i}")
    row_valid = row_valid & (a > 0)
    col_valid = col_valid & (b > 0)
    nonempty = row_valid.any(1) & col_valid.any(1)
    mismatch = nonempty & ((sa - sb).abs() > mass_rtol * torch.maximum(sa, sb))
    if mismatch.any():
        i = int(mismatch.nonzero()[0])
        raise ValueError(
            f"sinkhorn: marginals `a` and `b` of problem {i} have different total mass "
            f"({float(sa[i]):.6g} vs {float(sb[i]):.6g}); the balanced problem needs them equal"
        )
    # Empty problems: every row and column counts as masked, so plan and duals come out 0.
    row_valid = row_valid & nonempty[:, None]
    col_valid = col_valid & nonempty[:, None]
    return a, b, row_valid, col_valid


def sinkhorn_reference(
    cost: torch.Tensor,
    eps: float,
    a: Optional[torch.Tensor] = None,
    b: Optional[torch.Tensor] = None,
    row_mask: Optional[torch.Tensor] = None,
    col_mask: Optional[torch.Tensor] = None,
    max_iter: int = 100,
    tol: float = 0.0,
) -> SinkhornResult:
    """Reference solver; same arguments and result as :func:`defect_det.layers.sinkhorn`.

    Differentiable (autograd, unrolled) w.r.t. ``cost``, ``a`` and ``b``.
    """
    a, b, row_valid, col_valid = validate_sinkhorn_inputs(cost, eps, a, b, row_mask, col_mask, max_iter, tol)
    eps = float(eps)
    valid = row_valid[:, :, None] & col_valid[:, None, :]  # (B, N, M)
    logits = (-cost / eps).masked_fill(~valid, MASKED_LOGIT)  # (B, N, M)
    tiny = torch.finfo(cost.dtype).tiny
    log_a = torch.where(row_valid, a.clamp_min(tiny).log(), torch.zeros_like(a))
    log_b = torch.where(col_valid, b.clamp_min(tiny).log(), torch.zeros_like(b))
    zero_f = torch.zeros_like(log_a)
    zero_g = torch.zeros_like(log_b)
    # Scaled duals u = f / eps, v = g / eps.
    u, v = zero_f, zero_g
    n_iter = 0
    for t in range(1, int(max_iter) + 1):
        u_new = torch.where(row_valid, log_a - torch.logsumexp(logits + v[:, None, :], dim=2), zero_f)
        if tol > 0 and t > 1:
            with torch.no_grad():
                err = (a * ((u - u_new).exp() - 1).abs()).sum(1).max()
            stop = bool(err < tol)
        else:
            stop = False
        u = u_new
        v = torch.where(col_valid, log_b - torch.logsumexp(logits + u[:, :, None], dim=1), zero_g)
        n_iter = t
        if stop:
            break
    plan = torch.where(valid, (logits + u[:, :, None] + v[:, None, :]).exp(), torch.zeros_like(logits))
    return SinkhornResult(plan, u * eps, v * eps, n_iter)
