"""Sinkhorn NMS (defect_det.sinkhorn_nms.nms): NMS limit, batching, gradients, bad input."""
import pytest
import torch
from torchvision.ops import batched_nms

from defect_det.sinkhorn_nms.nms import SinkhornNMSParams, sinkhorn_nms

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


def test_nms_limit_matches_batched_nms():
    """tau -> 0, no feature term, IoU spatial term, greedy seeds: kept set == batched_nms keep set."""
    g = torch.Generator().manual_seed(0)
    f1s = []
    for trial in range(10):
        items = [clustered_detections(g, int(torch.randint(1, 8, (1,), generator=g)),
                                      int(torch.randint(1, 10, (1,), generator=g))) for _ in range(4)]
        boxes, scores, classes, mask = pad(items)
        res = sinkhorn_nms(boxes, scores, classes, mask, params=LIMIT)
        for i, (bx, s, c) in enumerate(items):
            ref = set(batched_nms(bx, s, c, 0.5).tolist())
            ours = set(res.rep[i][res.valid[i]].tolist())
            tp = len(ref & ours)
            f1s.append(2 * tp / max(len(ref) + len(ours), 1))
    assert sum(f1s) / len(f1s) >= 0.95, f1s


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


def test_padding_and_per_image_k_do_not_change_results():
    g = torch.Generator().manual_seed(1)
    items = [clustered_detections(g, 2, 3), clustered_detections(g, 5, 4)]
    boxes, scores, classes, mask = pad(items)
    batched = sinkhorn_nms(boxes, scores, classes, mask)
    for i, (bx, s, c) in enumerate(items):
        single = sinkhorn_nms(bx[None], s[None], c[None])
        k = int(single.valid.sum())
        assert int(batched.valid[i].sum()) == k
        torch.testing.assert_close(batched.scores[i][batched.valid[i]], single.scores[0][single.valid[0]],
                                   rtol=1e-4, atol=1e-5)


def test_gradient_reaches_proposals_hard_nms_suppresses():
    """Hard NMS gives zero gradient to suppressed detections; Sinkhorn NMS does not."""
    boxes = torch.tensor([[[0, 0, 10, 10], [1, 1, 11, 11], [30, 30, 40, 40.]]], requires_grad=True)
    scores = torch.tensor([[0.9, 0.6, 0.8]], requires_grad=True)
    classes = torch.zeros(1, 3, dtype=torch.long)
    res = sinkhorn_nms(boxes, scores, classes)
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


@pytest.mark.parametrize("kw,match", [({"tau": 0.0}, "tau"), ({"spatial": "giou"}, "spatial"),
                                      ({"alpha": -1.0}, "alpha")])
def test_bad_params(kw, match):
    with pytest.raises(ValueError, match=match):
        sinkhorn_nms(torch.zeros(1, 1, 4), torch.zeros(1, 1), torch.zeros(1, 1, dtype=torch.long),
                     params=SinkhornNMSParams(**kw))


def test_bad_shapes_and_nan():
    with pytest.raises(ValueError, match="scores"):
        sinkhorn_nms(torch.zeros(1, 2, 4), torch.zeros(1, 3), torch.zeros(1, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="NaN"):
        sinkhorn_nms(torch.full((1, 1, 4), float("nan")), torch.zeros(1, 1), torch.zeros(1, 1, dtype=torch.long))
