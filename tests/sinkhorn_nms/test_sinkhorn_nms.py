"""Sinkhorn NMS (defect_det.sinkhorn_nms.nms): NMS limit, batching, gradients, bad input; the sparse
problem of issue 17 (forbidden pairs, blocks, dense == blocked, early exit, warm start)."""
import dataclasses

import pytest
import torch
from torchvision.ops import batched_nms, box_iou

from defect_det.layers.sinkhorn import compiled_sinkhorn_available, sinkhorn
from defect_det.sinkhorn_nms import nms as nms_module
from defect_det.sinkhorn_nms.nms import SinkhornNMSParams, sinkhorn_nms

needs_C = pytest.mark.skipif(not compiled_sinkhorn_available("cpu"), reason="defect_det._C is not built")

LIMIT = SinkhornNMSParams(alpha=0.0, beta=0.0, gamma=1.0, tau=0.01, spatial="iou", dustbin_cost=0.5,
                          seed_iou=0.5, max_regions=1000, refine_iters=0, sinkhorn_iters=100)


def clustered_detections(g, n_clusters, per_cluster, num_classes=3, size=200.0):
    """Random clusters of jittered boxes around random centres, random scores and classes."""
    boxes, scores, classes = [], [], []
    for _ in range(n_clusters):
        c = torch.rand(2, generator=g) * size
        wh = 10 + torch.rand(2, generator=g) * 40
        cls = int(torch.randint(num_classes, (1,), generator=g))
        for _ in range(per_cluster):
            jit = (torch.rand(4, generator=g) - 0.5) * torch.cat([wh, wh]) * 0.3
            box = torch.cat([c - wh / 2, c + wh / 2]) + jit
            boxes.append(box)
            scores.append(float(torch.rand(1, generator=g)) * 0.95 + 0.05)
            classes.append(cls)
    return torch.stack(boxes), torch.tensor(scores), torch.tensor(classes)


def pad(items):
    n = max(len(s) for _, s, _ in items)
    B = len(items)
    boxes = torch.zeros(B, n, 4)
    scores = torch.zeros(B, n)
    classes = torch.zeros(B, n, dtype=torch.long)
    mask = torch.zeros(B, n, dtype=torch.bool)
    for i, (bx, s, c) in enumerate(items):
        boxes[i, : len(s)], scores[i, : len(s)], classes[i, : len(s)], mask[i, : len(s)] = bx, s, c, True
    return boxes, scores, classes, mask


@pytest.mark.parametrize("mode", ["blocked", "dense", "shared"])
def test_nms_limit_matches_batched_nms(mode):
    """tau -> 0, no feature term, IoU spatial term, greedy seeds: kept set == batched_nms keep set.
    (Measured: mean F1 0.996 over the 40 sets in every mode; the one set at 0.857 is explained by
    test_representative_can_be_a_box_hard_nms_gave_to_another_seed.)"""
    g = torch.Generator().manual_seed(0)
    f1s = []
    for trial in range(10):
        items = [clustered_detections(g, int(torch.randint(1, 8, (1,), generator=g)),
                                      int(torch.randint(1, 10, (1,), generator=g))) for _ in range(4)]
        boxes, scores, classes, mask = pad(items)
        res = sinkhorn_nms(boxes, scores, classes, mask, params=dataclasses.replace(LIMIT, mode=mode))
        for i, (bx, s, c) in enumerate(items):
            ref = set(batched_nms(bx, s, c, 0.5).tolist())
            ours = set(res.rep[i][res.valid[i]].tolist())
            tp = len(ref & ours)
            f1s.append(2 * tp / max(len(ref) + len(ours), 1))
    assert sum(f1s) / len(f1s) >= 0.95, f1s


def test_representative_can_be_a_box_hard_nms_gave_to_another_seed():
    """Why the NMS limit is not exact (README): greedy NMS lets the highest-scoring kept box suppress every
    box above the IoU threshold, while the assignment sends a box to the region it overlaps *most*. Box 1
    (0.8) is suppressed by seed 0 (0.9, IoU 0.6) but overlaps seed 2 (0.5, IoU 0.71) more, so it joins
    region 2 and, outscoring the seed, becomes its representative: same regions, another kept box."""
    boxes = torch.tensor([[[0, 0, 10, 10], [3, 0, 13, 10], [5, 0, 15, 10.]]])
    scores = torch.tensor([[0.9, 0.8, 0.5]])
    classes = torch.zeros(1, 3, dtype=torch.long)
    iou = box_iou(boxes[0], boxes[0])
    assert iou[0, 1] > 0.5 and iou[0, 2] < 0.5 and iou[1, 2] > iou[0, 1]
    assert batched_nms(boxes[0], scores[0], classes[0], 0.5).tolist() == [0, 2]
    res = sinkhorn_nms(boxes, scores, classes, params=LIMIT)
    assert res.valid[0].tolist() == [True, True]  # the seeds (regions) are the hard-NMS keep set
    assert res.rep[0].tolist() == [0, 1]  # region 2's representative is box 1
    assert res.plan[0, 1, 1] > 0.99


def test_regions_merge_duplicates_and_never_mix_classes():
    boxes = torch.tensor([[[0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10], [50, 50, 60, 60.]]])
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.6]])
    classes = torch.tensor([[0, 0, 1, 0]])
    res = sinkhorn_nms(boxes, scores, classes)
    kept = res.valid[0]
    assert int(kept.sum()) == 3  # the class-1 twin of box 0 stays its own region
    assert set(res.classes[0][kept].tolist()) == {0, 1}
    plan = res.plan[0]
    assert plan[2, :-1][res.classes[0] == 0].abs().max() < 1e-6  # class-1 box never in a class-0 region
    # the two class-0 duplicates form one region whose box lies between them
    k = int((res.rep[0] == 0).nonzero()[0])
    assert 0 < float(res.boxes[0, k, 0]) < 1 and 10 < float(res.boxes[0, k, 2]) < 11
    assert 0.8 < float(res.scores[0, k]) < 0.9


@pytest.mark.parametrize("mode", ["blocked", "dense", "shared"])
@pytest.mark.parametrize("tol,atol", [(0.0, 1e-5), (0.01, 1e-3)])
def test_padding_and_per_image_k_do_not_change_results(mode, tol, atol):
    """Exact without early exit; with it the batch stops when its worst problem is below tol, so an
    image's result depends on its batch mates, within that accuracy."""
    g = torch.Generator().manual_seed(1)
    items = [clustered_detections(g, 2, 3), clustered_detections(g, 5, 4)]
    boxes, scores, classes, mask = pad(items)
    p = SinkhornNMSParams(mode=mode, tol=tol)
    batched = sinkhorn_nms(boxes, scores, classes, mask, params=p)
    for i, (bx, s, c) in enumerate(items):
        single = sinkhorn_nms(bx[None], s[None], c[None], params=p)
        k = int(single.valid.sum())
        assert int(batched.valid[i].sum()) == k
        torch.testing.assert_close(batched.scores[i][batched.valid[i]], single.scores[0][single.valid[0]],
                                   rtol=0, atol=atol)


@pytest.mark.parametrize("mode", ["blocked", "dense", "shared"])
def test_gradient_reaches_proposals_hard_nms_suppresses(mode):
    """Hard NMS gives zero gradient to suppressed detections; Sinkhorn NMS does not."""
    boxes = torch.tensor([[[0, 0, 10, 10], [1, 1, 11, 11], [30, 30, 40, 40.]]], requires_grad=True)
    scores = torch.tensor([[0.9, 0.6, 0.8]], requires_grad=True)
    classes = torch.zeros(1, 3, dtype=torch.long)
    res = sinkhorn_nms(boxes, scores, classes, params=SinkhornNMSParams(mode=mode))
    (res.scores.sum() + res.boxes.sum()).backward()
    assert scores.grad[0, 1].abs() > 0 and boxes.grad[0, 1].abs().sum() > 0
    # hard NMS: the same objective through batched_nms only touches the kept detections
    b2, s2 = boxes.detach().clone().requires_grad_(), scores.detach().clone().requires_grad_()
    keep = batched_nms(b2[0], s2[0], classes[0], 0.5)
    (s2[0, keep].sum() + b2[0, keep].sum()).backward()
    assert 1 not in keep.tolist() and s2.grad[0, 1] == 0 and b2.grad[0, 1].abs().sum() == 0


def test_stable_at_small_tau_and_empty_images():
    g = torch.Generator().manual_seed(2)
    boxes, scores, classes, mask = pad([clustered_detections(g, 3, 5), clustered_detections(g, 1, 1)])
    mask[1] = False
    res = sinkhorn_nms(boxes, scores, classes, mask, params=SinkhornNMSParams(tau=1e-3))
    assert torch.isfinite(res.boxes[res.valid]).all() and torch.isfinite(res.scores).all()
    assert not res.valid[1].any()


@pytest.mark.parametrize("mode", ["blocked", "dense", "shared"])
def test_batch_without_candidates(mode):
    boxes, scores = torch.zeros(2, 3, 4), torch.zeros(2, 3)
    classes, mask = torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3, dtype=torch.bool)
    res = sinkhorn_nms(boxes, scores, classes, mask, params=SinkhornNMSParams(mode=mode))
    assert not res.valid.any() and res.plan.abs().max() == 0 and torch.isfinite(res.boxes).all()


@pytest.mark.parametrize("kw,match", [({"tau": 0.0}, "tau"), ({"spatial": "giou"}, "spatial"),
                                      ({"alpha": -1.0}, "alpha"), ({"mode": "sparse"}, "mode"),
                                      ({"tol": -1.0}, "tol"), ({"iou_floor": 1.0}, "iou_floor")])
def test_bad_params(kw, match):
    with pytest.raises(ValueError, match=match):
        sinkhorn_nms(torch.zeros(1, 1, 4), torch.zeros(1, 1), torch.zeros(1, 1, dtype=torch.long),
                     params=SinkhornNMSParams(**kw))


def test_bad_shapes_and_nan():
    with pytest.raises(ValueError, match="scores"):
        sinkhorn_nms(torch.zeros(1, 2, 4), torch.zeros(1, 3), torch.zeros(1, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="NaN"):
        sinkhorn_nms(torch.full((1, 1, 4), float("nan")), torch.zeros(1, 1), torch.zeros(1, 1, dtype=torch.long))


# --- issue 17: the sparse problem -------------------------------------------------------------------


def _batch(seed, images=3, dtype=torch.float64):
    """A few images of clustered detections of 3 classes, padded (clusters may touch each other)."""
    g = torch.Generator().manual_seed(seed)
    items = [clustered_detections(g, int(torch.randint(2, 7, (1,), generator=g)),
                                  int(torch.randint(2, 8, (1,), generator=g)), size=120.0) for _ in range(images)]
    boxes, scores, classes, mask = pad(items)
    return boxes.to(dtype), scores.to(dtype), classes, mask


def _allowed(boxes, classes, mask, res_seed_boxes, res_classes, seed_valid, floor):
    """Brute force: (B, N, K) allowed pairs = same class, IoU(candidate, seed box) > floor."""
    iou = torch.stack([box_iou(b, r) for b, r in zip(boxes, res_seed_boxes)])
    return (classes[:, :, None] == res_classes[:, None, :]) & (iou > floor) & mask[:, :, None] & seed_valid[:, None, :]


@pytest.mark.parametrize("kw", [{}, {"warm_start": False}, {"spatial": "center"}, {"iou_floor": 0.2},
                                {"iou_floor": -1.0}, {"score_power": 2.0, "refine_iters": 3}])
def test_dense_and_blocked_give_the_same_plan(kw):
    """The same forbidden pattern solved as one matrix per image and as packed blocks: same plan (1e-6),
    same regions, same gradient."""
    boxes, scores, classes, mask = _batch(3)
    out = {}
    for mode in ("dense", "blocked"):
        b, s = boxes.clone().requires_grad_(), scores.clone().requires_grad_()
        p = SinkhornNMSParams(mode=mode, tol=0.0, sinkhorn_iters=40, **kw)
        res = sinkhorn_nms(b, s, classes, mask, params=p)
        (res.boxes.sum() + (res.scores * torch.arange(res.scores.shape[1])).sum()).backward()
        out[mode] = (res, b.grad, s.grad)
    (d, dgb, dgs), (k, kgb, kgs) = out["dense"], out["blocked"]
    assert d.n_iter == k.n_iter == (0,) + (40,) * (len(d.n_iter) - 1)
    assert (d.plan - k.plan).abs().max() < 1e-6
    assert torch.equal(d.valid, k.valid) and torch.equal(d.rep, k.rep)
    torch.testing.assert_close(d.boxes, k.boxes, rtol=0, atol=1e-6)
    torch.testing.assert_close(d.scores, k.scores, rtol=0, atol=1e-6)
    torch.testing.assert_close(dgb, kgb, rtol=0, atol=1e-6)
    torch.testing.assert_close(dgs, kgs, rtol=0, atol=1e-6)


@pytest.mark.parametrize("floor", [0.0, 0.3])
def test_forbidden_pairs_get_no_mass_and_rows_sum_to_one(floor):
    boxes, scores, classes, mask = _batch(4)
    res = sinkhorn_nms(boxes, scores, classes, mask, params=SinkhornNMSParams(iou_floor=floor, tol=0.0))
    seed_idx, seed_mask = nms_module._greedy_seeds(boxes, scores, classes, mask, 0.5, 100)
    allowed = _allowed(boxes, classes, mask, nms_module._gather(boxes, seed_idx), res.classes, seed_mask, floor)
    allowed |= seed_idx[:, None, :] == torch.arange(boxes.shape[1])[None, :, None]  # a seed joins its own region
    assert res.plan[..., :-1][~allowed].abs().max() == 0
    assert ((res.plan[..., :-1] > 1e-3) & allowed).any()
    rows = res.plan.sum(-1)  # each candidate's mass 1, up to the row error left after 50 iterations
    torch.testing.assert_close(rows[mask], torch.ones_like(rows[mask]), rtol=0, atol=1e-4)
    assert rows[~mask].abs().max() == 0


def test_blocks_are_the_connected_components():
    """_support's blocks equal a union-find over (region, region) pairs that share a candidate, and no
    block mixes images or classes."""
    boxes, scores, classes, mask = _batch(5, images=4)
    seed_idx, seed_mask = nms_module._greedy_seeds(boxes, scores, classes, mask, 0.5, 100)
    sup = nms_module._support(boxes, classes, mask, seed_idx, seed_mask, 0.0)
    R = sup.reg_k.numel()
    parent = list(range(R))

    def find(i):
        while parent[i] != i:
            i = parent[i]
        return i

    by_cand = {}
    for c, r in zip(sup.edge_cand.tolist(), sup.edge_reg.tolist()):
        by_cand.setdefault(c, []).append(r)
    for regs in by_cand.values():
        for r in regs[1:]:
            parent[find(r)] = find(regs[0])
    roots = [find(i) for i in range(R)]
    blocks = sup.reg_block.tolist()
    for i in range(R):
        for j in range(R):
            assert (roots[i] == roots[j]) == (blocks[i] == blocks[j])
    reg_cls = classes.reshape(-1)[sup.reg_cand]
    for blk in set(blocks):
        members = sup.reg_block == blk
        assert sup.reg_img[members].unique().numel() == 1 and reg_cls[members].unique().numel() == 1
    assert torch.equal(sup.row_block, sup.reg_block[sup.edge_reg][torch.unique_consecutive(sup.row_of_edge, return_counts=True)[1].cumsum(0) - 1])
    assert len(set(blocks)) > 3  # the example has several blocks per image


@needs_C
def test_packed_blocks_stay_independent():
    """_pack_blocks puts several blocks into one problem; each is placed without overlap."""
    nrows, nslots = [7, 3, 2, 5, 1, 1], [3, 2, 2, 4, 2, 2]
    prob, roff, soff, S, NR, M = nms_module._pack_blocks(nrows, nslots)
    assert (NR, M) == (7, 4) and S < len(nrows)
    cells = set()
    for i in range(len(nrows)):
        assert roff[i] + nrows[i] <= NR and soff[i] + nslots[i] <= M
        block = {(prob[i], r, c) for r in range(roff[i], roff[i] + nrows[i]) for c in range(soff[i], soff[i] + nslots[i])}
        assert not block & cells
        cells |= block


@needs_C
def test_first_assignment_in_closed_form_is_the_sinkhorn_solution():
    """With capacities = the column sums of the row softmax, Sinkhorn's fixed point is that softmax."""
    g = torch.Generator().manual_seed(6)
    cost = torch.rand(3, 9, 5, generator=g, dtype=torch.float64)
    a = torch.ones(3, 9, dtype=torch.float64)
    col = torch.ones(3, 5, dtype=torch.bool)
    plan = nms_module._row_softmax_plan(cost, 0.1, a, col)
    res = sinkhorn(cost, 0.1, a=a, b=plan.sum(1), max_iter=200, tol=1e-12)
    assert res.n_iter == 2  # converged after the first iteration (the exit test runs from the second)
    torch.testing.assert_close(res.plan, plan, rtol=0, atol=1e-12)


def test_early_exit_and_warm_start():
    """tol stops each assignment early, close to the converged result; warm start needs fewer iterations
    for the same tol on this example; tol 0 runs sinkhorn_iters."""
    boxes, scores, classes, mask = _batch(7)
    ref = sinkhorn_nms(boxes, scores, classes, mask, params=SinkhornNMSParams(tol=0.0, sinkhorn_iters=2000))
    assert ref.n_iter == (0, 2000, 2000)
    iters = {}
    for warm in (True, False):
        for tol in (1e-2, 1e-4):
            res = sinkhorn_nms(boxes, scores, classes, mask, params=SinkhornNMSParams(tol=tol, warm_start=warm,
                                                                                       sinkhorn_iters=2000))
            iters[warm, tol] = sum(res.n_iter)
            assert torch.equal(res.valid, ref.valid)
            assert (res.plan - ref.plan).abs().max() < 10 * tol
            assert (res.scores - ref.scores)[ref.valid].abs().max() < tol
    assert iters[True, 1e-2] < iters[True, 1e-4] < 4000
    assert iters[True, 1e-2] <= iters[False, 1e-2] and iters[True, 1e-4] <= iters[False, 1e-4]


@needs_C
def test_blocked_gradcheck():
    """Gradient of the blocked path (closed-form first assignment, two op calls, warm start through the
    previous duals) w.r.t. scores and boxes, against finite differences."""
    boxes = torch.tensor([[[0, 0, 10, 10], [1, 1, 11, 12], [2, 0, 12, 9], [30, 30, 40, 40.], [31, 29, 41, 41],
                           [8, 1, 18, 11]]], dtype=torch.float64)
    scores = torch.tensor([[0.9, 0.6, 0.5, 0.8, 0.7, 0.55]], dtype=torch.float64)
    classes = torch.tensor([[0, 0, 0, 0, 0, 1]])
    p = SinkhornNMSParams(tol=0.0, sinkhorn_iters=8, seed_iou=0.7)

    def f(b, s):
        res = sinkhorn_nms(b, s, classes, params=p)
        return res.boxes, res.scores

    assert torch.autograd.gradcheck(f, (boxes.requires_grad_(), scores.requires_grad_()), eps=1e-6, atol=1e-5)


def test_iou_floor_below_zero_keeps_one_block_per_class_and_image():
    boxes, scores, classes, mask = _batch(8)
    seed_idx, seed_mask = nms_module._greedy_seeds(boxes, scores, classes, mask, 0.5, 100)
    sup = nms_module._support(boxes, classes, mask, seed_idx, seed_mask, -1.0)
    groups = {(int(i), int(classes.reshape(-1)[c])) for i, c in zip(sup.reg_img, sup.reg_cand)}
    assert sup.block_root.numel() == len(groups)
