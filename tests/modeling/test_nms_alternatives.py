"""Soft-NMS and weighted box fusion (defect_det/modeling/roi_heads/soft_nms.py, wbf.py): known cases, the batched op against a plain
per-image per-class reference, the hard-NMS limit, and the post-processor through the ROI heads."""
import math

import pytest
import torch
from torchvision.ops import batched_nms, box_iou

from defect_det.modeling.roi_heads import SoftNMS, soft_nms


def _reference(boxes, scores, classes, method, sigma, nt, min_score, topk):
    """Textbook Soft-NMS of one image, one class at a time, then merged by score at the time taken."""
    taken = []
    for c in classes.unique().tolist():
        idx = (classes == c).nonzero().squeeze(1).tolist()
        s = {i: float(scores[i]) for i in idx if float(scores[i]) >= min_score}
        while s:
            m = max(s, key=lambda i: (s[i], -i))
            taken.append((s.pop(m), m))
            for i in list(s):
                iou = float(box_iou(boxes[m:m + 1], boxes[i:i + 1])[0, 0])
                if method == "linear":
                    s[i] *= (1 - iou) if iou >= nt else 1.0
                else:
                    s[i] *= math.exp(-iou * iou / sigma)
                if s[i] < min_score:
                    del s[i]
    taken.sort(key=lambda t: -t[0])
    return taken[:topk]


def _one(boxes, scores, classes, **kw):
    b, s, c = boxes[None], scores[None], classes[None]
    index, taken = soft_nms(b, s, c, torch.ones_like(s, dtype=torch.bool), **kw)
    keep = index[0] >= 0
    return index[0][keep].tolist(), taken[0][keep].tolist()


def test_known_decays():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 8.0], [20.0, 20.0, 30.0, 30.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    iou = 0.8  # 80 / 100
    idx, s = _one(boxes, scores, torch.zeros(3, dtype=torch.long), method="gaussian", sigma=0.5)
    assert idx == [0, 2, 1]
    assert s == pytest.approx([0.9, 0.7, 0.8 * math.exp(-iou * iou / 0.5)], rel=1e-5)
    idx, s = _one(boxes, scores, torch.zeros(3, dtype=torch.long), method="linear", iou_thresh=0.5)
    assert idx == [0, 2, 1] and s == pytest.approx([0.9, 0.7, 0.8 * (1 - iou)], rel=1e-5)
    idx, s = _one(boxes, scores, torch.zeros(3, dtype=torch.long), method="linear", iou_thresh=0.85)
    assert idx == [0, 1, 2] and s == pytest.approx([0.9, 0.8, 0.7])           # below N_t: unchanged
    # another class is never decayed
    idx, s = _one(boxes, scores, torch.tensor([0, 1, 0]), method="gaussian", sigma=0.5)
    assert idx == [0, 1, 2] and s == pytest.approx([0.9, 0.8, 0.7])
    # decayed below min_score: dropped
    idx, _ = _one(boxes, scores, torch.zeros(3, dtype=torch.long), method="linear", iou_thresh=0.5, min_score=0.5)
    assert idx == [0, 2]


@pytest.mark.parametrize("method", ["linear", "gaussian"])
def test_batched_matches_the_reference(method):
    g = torch.Generator().manual_seed(0)
    sizes = [0, 7, 40, 25]
    n = max(sizes)
    boxes = torch.zeros(len(sizes), n, 4)
    scores, classes = torch.zeros(len(sizes), n), torch.zeros(len(sizes), n, dtype=torch.long)
    valid = torch.zeros(len(sizes), n, dtype=torch.bool)
    for i, m in enumerate(sizes):
        xy = torch.rand(m, 2, generator=g) * 60
        wh = torch.rand(m, 2, generator=g) * 30 + 5
        boxes[i, :m] = torch.cat([xy, xy + wh], 1)
        scores[i, :m] = torch.rand(m, generator=g)
        classes[i, :m] = torch.randint(0, 3, (m,), generator=g)
        valid[i, :m] = True
    kw = dict(method=method, sigma=0.5, iou_thresh=0.3, min_score=0.05, topk=20)
    index, taken = soft_nms(boxes, scores, classes, valid, **kw)
    for i, m in enumerate(sizes):
        ref = _reference(boxes[i, :m], scores[i, :m], classes[i, :m], method, 0.5, 0.3, 0.05, 20)
        keep = index[i] >= 0
        assert index[i][keep].tolist() == [j for _, j in ref]
        assert taken[i][keep].tolist() == pytest.approx([s for s, _ in ref], rel=1e-5)
        assert (index[i][~keep] == -1).all() and (taken[i][~keep] == 0).all()


def test_tiny_sigma_is_hard_nms_at_any_overlap():
    g = torch.Generator().manual_seed(1)
    xy = torch.rand(30, 2, generator=g) * 80
    boxes = torch.cat([xy, xy + torch.rand(30, 2, generator=g) * 20 + 4], 1)
    scores, classes = torch.rand(30, generator=g) * 0.9 + 0.1, torch.randint(0, 2, (30,), generator=g)
    idx, s = _one(boxes, scores, classes, method="gaussian", sigma=1e-9, min_score=0.01, topk=-1)
    hard = batched_nms(boxes, scores, classes, 1e-9).tolist()
    assert idx == hard and s == pytest.approx(scores[hard].tolist())


def test_bad_settings_name_the_key():
    with pytest.raises(ValueError, match="SOFT_NMS.METHOD"):
        SoftNMS(method="cubic")
    with pytest.raises(ValueError, match="SOFT_NMS.SIGMA"):
        SoftNMS(sigma=0.0)


def test_post_processor_on_box_predictions_and_in_a_model():
    from detectron2.modeling import build_model

    from defect_det.config import get_defect_cfg

    # per-class boxes (R, K * 4) and probabilities (R, K + 1) of two proposals on one image
    boxes = [torch.tensor([[0.0, 0.0, 10.0, 10.0, 50.0, 50.0, 60.0, 60.0],
                           [0.0, 0.0, 10.0, 8.0, 50.0, 50.0, 60.0, 61.0]])]
    probs = [torch.tensor([[0.9, 0.01, 0.09], [0.8, 0.02, 0.18]])]
    post = SoftNMS(method="gaussian", sigma=0.5, topk_per_image=10)
    (inst,), (kept,) = post(boxes, probs, [(100, 100)], score_thresh=0.05)
    assert inst.pred_classes.tolist() == [0, 0] and kept.tolist() == [0, 1]
    assert inst.scores.tolist() == pytest.approx([0.9, 0.8 * math.exp(-0.64 / 0.5)], rel=1e-5)

    cfg = get_defect_cfg()
    cfg.merge_from_file("configs/synthetic/faster_rcnn_R18_FPN_cpu.yaml")
    cfg.merge_from_list(["MODEL.ROI_HEADS.NMS_TYPE", "soft", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
                         "MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    assert isinstance(model.roi_heads.box_predictor.postprocessor, SoftNMS)
    with torch.no_grad():
        out = model([{"image": torch.randint(0, 255, (3, 64, 96), dtype=torch.uint8), "height": 64, "width": 96}])
    inst = out[0]["instances"]
    assert len(inst) > 0 and (inst.scores[:-1] >= inst.scores[1:]).all()


# ------------------------------------------------------------------------ weighted box fusion
def test_wbf_fuses_overlapping_boxes_by_score_weight():
    from defect_det.modeling.roi_heads import WeightedBoxFusion, weighted_box_fusion

    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [2.0, 0.0, 12.0, 10.0], [40.0, 40.0, 50.0, 50.0],
                          [0.0, 0.0, 10.0, 10.0]])
    scores = torch.tensor([0.9, 0.3, 0.5, 0.8])
    classes = torch.tensor([0, 0, 0, 1])
    fb, fs, fc, best = weighted_box_fusion(boxes, scores, classes, iou_thresh=0.55)
    # class 0: boxes 0 and 1 (IoU 0.67) fuse: x = (0 * 0.9 + 2 * 0.3) / 1.2; score = mean(0.9, 0.3)
    assert fc.tolist() == [1, 0, 0] and best.tolist() == [3, 0, 2]
    assert fs.tolist() == pytest.approx([0.8, 0.6, 0.5])
    assert fb[1].tolist() == pytest.approx([0.5, 0.0, 10.5, 10.0])
    assert fb[0].tolist() == [0.0, 0.0, 10.0, 10.0] and fb[2].tolist() == [40.0, 40.0, 50.0, 50.0]
    # a stricter threshold keeps them apart
    _, fs2, _, _ = weighted_box_fusion(boxes, scores, classes, iou_thresh=0.7)
    assert len(fs2) == 4
    with pytest.raises(ValueError, match="WBF.IOU_THRESH"):
        WeightedBoxFusion(iou_thresh=1.5)
    post = WeightedBoxFusion(topk_per_image=2)
    (inst,), (kept,) = post([boxes], [torch.stack([scores, 1 - scores], 1)], [(64, 64)], score_thresh=0.05)
    assert len(inst) == 2 and inst.scores.tolist() == pytest.approx(sorted(inst.scores.tolist(), reverse=True))
