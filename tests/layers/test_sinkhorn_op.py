"""Tests of the compiled batched Sinkhorn op (defect_det._C) against POT, autograd and the reference."""
import importlib
import warnings

import numpy as np
import pytest
import torch

from defect_det.layers.sinkhorn import compiled_sinkhorn_available, sinkhorn
from defect_det.layers.sinkhorn_reference import sinkhorn_reference

sinkhorn_module = importlib.import_module("defect_det.layers.sinkhorn")
needs_C = pytest.mark.skipif(not compiled_sinkhorn_available("cpu"), reason="defect_det._C is not built")


def _problem(B, N, M, dtype=torch.float64, seed=0, masked=False):
    """Random cost (B, N, M), masks and marginals normalised to mass 1 over the valid entries."""
    g = torch.Generator().manual_seed(seed)
    cost = torch.rand(B, N, M, generator=g, dtype=dtype)
    row = torch.ones(B, N, dtype=torch.bool)
    col = torch.ones(B, M, dtype=torch.bool)
    if masked:
        for i in range(B):
            row[i, torch.randint(1, N + 1, (1,), generator=g).item():] = False
            col[i, torch.randint(1, M + 1, (1,), generator=g).item():] = False
        row[0, 0] = False  # a hole, not only a padded tail
        row[0, 1] = True
    a = (torch.rand(B, N, generator=g, dtype=dtype) + 0.1) * row
    b = (torch.rand(B, M, generator=g, dtype=dtype) + 0.1) * col
    return cost, a / a.sum(1, keepdim=True), b / b.sum(1, keepdim=True), row, col


@needs_C
@pytest.mark.parametrize("shape,masked", [((3, 6, 6), False), ((2, 5, 9), False), ((3, 8, 6), True)])
def test_forward_matches_pot(shape, masked):
    ot = pytest.importorskip("ot")
    eps = 0.1
    cost, a, b, row, col = _problem(*shape, masked=masked, seed=1)
    res = sinkhorn(cost, eps, a, b, row, col, max_iter=2000, tol=1e-13, impl="cpp")
    assert res.n_iter < 2000
    for i in range(shape[0]):
        r, c = row[i].nonzero()[:, 0], col[i].nonzero()[:, 0]
        sub = cost[i][r][:, c].numpy()
        ref = ot.bregman.sinkhorn_log(a[i, r].numpy(), b[i, c].numpy(), sub, eps, numItermax=5000, stopThr=1e-14)
        ours = res.plan[i][r][:, c].numpy()
        assert np.abs(ours - ref).max() <= 1e-6
        # everything outside the valid block is exactly 0
        outside = res.plan[i].clone()
        outside[r[:, None], c[None, :]] = 0
        assert outside.abs().max() == 0


@needs_C
@pytest.mark.parametrize("masked", [False, True])
def test_gradcheck_cpp_backward(masked):
    cost, a, b, row, col = _problem(2, 4, 5, masked=masked, seed=2)
    # a and b are free leaves: the map is evaluated at perturbed marginals, so keep their masses
    # equal by construction (b rescaled to a's mass) to stay inside the domain of the balanced problem.
    # Entries under a mask get a positive dummy value (ignored, so their gradient must be 0) so that
    # the finite differences never step into negative marginals.
    cost.requires_grad_(True)
    a = torch.where(row, a, torch.full_like(a, 0.5)).requires_grad_(True)
    b0 = torch.where(col, b, torch.full_like(b, 0.5)).requires_grad_(True)

    def fn(c, aa, bb):
        mass_a = (aa * row).sum(1, keepdim=True)
        bb = bb * (mass_a / (bb * col).sum(1, keepdim=True))
        r = sinkhorn(c, 0.3, aa, bb, row, col, max_iter=15, impl="cpp")
        return r.plan, r.f, r.g

    assert torch.autograd.gradcheck(fn, (cost, a, b0), eps=1e-6, atol=1e-7, rtol=1e-5)


@needs_C
@pytest.mark.parametrize("masked", [False, True])
def test_cpp_matches_reference_float32(masked):
    cost, a, b, row, col = _problem(3, 7, 11, dtype=torch.float32, masked=masked, seed=3)
    g = torch.Generator().manual_seed(4)
    w_p = torch.randn(cost.shape, generator=g)
    w_f, w_g = torch.randn(a.shape, generator=g), torch.randn(b.shape, generator=g)
    outs = []
    for impl in ("reference", "cpp"):
        leaves = [t.clone().requires_grad_(True) for t in (cost, a, b)]
        r = sinkhorn(leaves[0], 0.05, leaves[1], leaves[2], row, col, max_iter=30, impl=impl)
        loss = (r.plan * w_p).sum() + (r.f * w_f).sum() + (r.g * w_g).sum()
        outs.append([r.plan, r.f, r.g] + list(torch.autograd.grad(loss, leaves)))
    for name, x, y in zip(["plan", "f", "g", "dcost", "da", "db"], *outs):
        scale = max(1.0, float(y.abs().max()))
        assert float((x - y).abs().max()) <= 2e-5 * scale, name


@needs_C
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_small_eps_is_stable(dtype):
    """eps = 1e-3 on costs in [0, 1): exp(-C / eps) underflows, the log-domain op must not."""
    cost, a, b, row, col = _problem(2, 20, 15, dtype=dtype, seed=5)
    cost.requires_grad_(True)
    # Sinkhorn converges slowly at such eps (the contraction rate degrades like exp(-1 / eps)):
    # 3000 iterations bring the row error below 1e-2 here; columns are exact after each v-update.
    res = sinkhorn(cost, 1e-3, a, b, max_iter=3000, impl="cpp")
    ref = sinkhorn_reference(cost.detach(), 1e-3, a, b, max_iter=3000)
    assert torch.isfinite(res.plan).all() and torch.isfinite(res.f).all() and torch.isfinite(res.g).all()
    atol = 1e-5 if dtype == torch.float32 else 1e-9
    torch.testing.assert_close(res.plan.sum(1), b, atol=atol, rtol=0)
    assert float((res.plan.sum(2) - a).abs().sum(1).max()) < 1e-2
    torch.testing.assert_close(res.plan, ref.plan, atol=atol, rtol=0)
    res.plan.pow(2).sum().backward()
    assert torch.isfinite(cost.grad).all()


@needs_C
def test_empty_rows_columns_and_problems():
    cost = torch.rand(3, 4, 5, dtype=torch.float64, requires_grad=True)
    row = torch.ones(3, 4, dtype=torch.bool)
    col = torch.ones(3, 5, dtype=torch.bool)
    row[0] = False  # problem 0: no valid row -> empty
    col[1, 2] = False  # problem 1: one empty column
    row[2, 3] = False  # problem 2: one empty row
    res = sinkhorn(cost, 0.1, row_mask=row, col_mask=col, max_iter=200, impl="cpp")
    ref = sinkhorn_reference(cost, 0.1, row_mask=row, col_mask=col, max_iter=200)
    assert res.plan[0].abs().max() == 0 and res.f[0].abs().max() == 0 and res.g[0].abs().max() == 0
    assert res.plan[1, :, 2].abs().max() == 0 and res.g[1, 2] == 0
    assert res.plan[2, 3].abs().max() == 0 and res.f[2, 3] == 0
    torch.testing.assert_close(res.plan, ref.plan, atol=1e-12, rtol=0)
    res.plan.sum().backward()
    assert torch.isfinite(cost.grad).all() and cost.grad[0].abs().max() == 0
    # zero-size problems
    for shape in [(0, 3, 3), (2, 0, 3), (2, 3, 0)]:
        r = sinkhorn(torch.rand(shape), 0.1, max_iter=5, impl="cpp")
        assert r.plan.shape == shape and r.f.shape == shape[:2] and r.g.shape == (shape[0], shape[2])


@needs_C
def test_early_exit():
    cost, a, b, row, col = _problem(4, 10, 12, seed=6)
    tol = 1e-6
    res = sinkhorn(cost, 0.2, a, b, max_iter=1000, tol=tol, impl="cpp")
    ref = sinkhorn_reference(cost, 0.2, a, b, max_iter=1000, tol=tol)
    assert 1 < res.n_iter < 1000 and res.n_iter == ref.n_iter
    assert float((res.plan.sum(2) - a).abs().sum(1).max()) < tol
    torch.testing.assert_close(res.plan.sum(1), b, atol=1e-12, rtol=0)


@needs_C
def test_unvalidated_call_matches_validated():
    """validate=False (callers that build valid problems, e.g. Sinkhorn NMS) runs the same op: same plan,
    duals and gradients, masked problem with an empty batch element."""
    cost, a, b, row, col = _problem(3, 7, 5, masked=True, seed=9)
    row[2], col[2] = False, False  # an empty problem
    a, b = a * row, b * col
    row, col = row & (a > 0), col & (b > 0)
    out = []
    for validate in (True, False):
        c = cost.clone().requires_grad_()
        res = sinkhorn(c, 0.1, a, b, row, col, max_iter=30, tol=1e-9, impl="cpp", validate=validate)
        (res.plan * torch.arange(5.0, dtype=cost.dtype)).sum().backward()
        out.append((res, c.grad))
    (r1, g1), (r2, g2) = out
    assert r1.n_iter == r2.n_iter
    for x, y in ((r1.plan, r2.plan), (r1.f, r2.f), (r1.g, r2.g), (g1, g2)):
        assert torch.equal(x, y)


def test_nan_in_a_large_cost_is_found():
    """The finite check sums the cost first and tests elementwise only when the sum is not finite."""
    cost = torch.rand(2, 50, 40)
    cost[1, 17, 3] = float("nan")
    with pytest.raises(ValueError, match="cost"):
        sinkhorn(cost, 0.1, impl="reference")
    cost[1, 17, 3] = 3e38  # finite, but the sum overflows: still valid
    cost[1, 18, 3] = 3e38
    assert torch.isfinite(sinkhorn(cost, 0.1, max_iter=2, impl="reference").plan).all()


BAD_INPUTS = [
    ("cost", dict(cost=torch.tensor([[[0.0, float("nan")], [1.0, 2.0]]]))),
    ("cost", dict(cost=torch.tensor([[[0.0, float("inf")], [1.0, 2.0]]]))),
    ("cost", dict(cost=torch.rand(2, 2))),
    ("a", dict(a=torch.ones(1, 3) / 3)),
    ("b", dict(b=torch.ones(2, 2) / 2)),
    ("row_mask", dict(row_mask=torch.ones(1, 3, dtype=torch.bool))),
    ("a", dict(a=torch.tensor([[1.5, -0.5]]))),
    ("b", dict(b=torch.tensor([[0.0, 0.0]]))),
    ("a` and `b", dict(a=torch.tensor([[0.5, 0.5]]), b=torch.tensor([[1.0, 1.0]]))),
    ("eps", dict(eps=0.0)),
    ("eps", dict(eps=-1.0)),
]


@pytest.mark.parametrize("impl", ["auto", "cpp", "reference"])
@pytest.mark.parametrize("name,kwargs", BAD_INPUTS)
def test_bad_input_raises(impl, name, kwargs):
    if impl == "cpp" and not compiled_sinkhorn_available("cpu"):
        pytest.skip("defect_det._C is not built")
    args = dict(cost=torch.rand(1, 2, 2), eps=0.1)
    args.update(kwargs)
    with pytest.raises(ValueError, match=f"`{name}`"):
        sinkhorn(impl=impl, **args)


def test_fallback_warns_once(monkeypatch):
    monkeypatch.setitem(sinkhorn_module._C_STATE, "loaded", False)
    monkeypatch.setitem(sinkhorn_module._C_STATE, "warned", False)
    cost = torch.rand(2, 3, 4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r1 = sinkhorn(cost, 0.1, max_iter=10)
        r2 = sinkhorn(cost, 0.1, max_iter=10)
    msgs = [w for w in caught if "defect_det._C is not built" in str(w.message)]
    assert len(msgs) == 1
    ref = sinkhorn_reference(cost, 0.1, max_iter=10)
    torch.testing.assert_close(r1.plan, ref.plan)
    torch.testing.assert_close(r2.plan, ref.plan)
    with pytest.raises(RuntimeError):
        sinkhorn(cost, 0.1, impl="cpp")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
@pytest.mark.skipif(not compiled_sinkhorn_available("cuda"), reason="defect_det._C built without CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_matches_cpu(dtype):
    cost, a, b, row, col = _problem(3, 37, 300, dtype=dtype, masked=True, seed=7)
    w = torch.randn(cost.shape, dtype=dtype)
    outs = []
    for dev in ("cpu", "cuda"):
        leaves = [t.to(dev).clone().requires_grad_(True) for t in (cost, a, b)]
        r = sinkhorn(leaves[0], 0.05, leaves[1], leaves[2], row.to(dev), col.to(dev), max_iter=50, tol=1e-7)
        loss = (r.plan * w.to(dev)).sum() + r.f.sum() + r.g.pow(2).sum()
        outs.append([r.plan, r.f, r.g] + list(torch.autograd.grad(loss, leaves)) + [torch.tensor(r.n_iter)])
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    for x, y in zip(*outs):
        scale = max(1.0, float(x.abs().max()))
        assert float((x - y.cpu()).abs().max()) <= tol * scale
