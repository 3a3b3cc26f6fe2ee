"""Sinkhorn NMS inside Detectron2's ROI heads (defect_det.modeling.roi_heads)."""
import os

import pytest
import torch
from detectron2.modeling import build_model

import defect_det  # noqa: F401
from defect_det.config import get_defect_cfg

from conftest import REPO


def _cfg(name, nms_type="hard", cascade=False):
    cfg = get_defect_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs/synthetic/faster_rcnn_R18_FPN_cpu.yaml"))
    cfg.MODEL.ROI_HEADS.NAME = name
    cfg.MODEL.ROI_HEADS.NMS_TYPE = nms_type
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 50
    if cascade:
        cfg.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG = True
        cfg.MODEL.ROI_BOX_CASCADE_HEAD.IOUS = (0.4, 0.5, 0.6)  # paper's cascade IoUs
        cfg.MODEL.ROI_HEADS.IOU_THRESHOLDS = [0.4]
    return cfg


def _run(cfg, state=None):
    torch.manual_seed(0)
    model = build_model(cfg)
    if state is not None:
        model.load_state_dict(state)
    model.eval()
    g = torch.Generator().manual_seed(1)
    inputs = [{"image": torch.rand(3, 96, 128, generator=g) * 255, "height": 96, "width": 128}
              for _ in range(2)]
    with torch.no_grad():
        return model, [o["instances"] for o in model(inputs)]


@pytest.mark.parametrize("stock,ours,cascade", [
    ("StandardROIHeads", "DefectStandardROIHeads", False),
    ("CascadeROIHeads", "DefectCascadeROIHeads", True),
])
def test_hard_mode_is_identical_to_stock_heads(stock, ours, cascade):
    m, ref = _run(_cfg(stock, cascade=cascade))
    _, out = _run(_cfg(ours, "hard", cascade=cascade), m.state_dict())
    for a, b in zip(ref, out):
        assert len(a) > 0
        assert torch.equal(a.pred_boxes.tensor, b.pred_boxes.tensor)
        assert torch.equal(a.scores, b.scores) and torch.equal(a.pred_classes, b.pred_classes)


@pytest.mark.parametrize("name,cascade", [("DefectStandardROIHeads", False), ("DefectCascadeROIHeads", True)])
def test_sinkhorn_mode_merges_duplicates(name, cascade):
    m, hard = _run(_cfg(name, "hard", cascade=cascade))
    _, soft = _run(_cfg(name, "sinkhorn", cascade=cascade), m.state_dict())
    for h, s in zip(hard, soft):
        assert 0 < len(s) <= 100
        assert torch.isfinite(s.pred_boxes.tensor).all() and (s.scores >= 0).all()
        assert (s.scores[:-1] >= s.scores[1:]).all()  # sorted like Detectron2's output
        # seeds are the hard-NMS keep set, so every region's class occurs among the hard detections
        assert set(s.pred_classes.tolist()) <= set(h.pred_classes.tolist())


def test_bad_nms_type_names_the_key():
    with pytest.raises(ValueError, match="MODEL.ROI_HEADS.NMS_TYPE"):
        build_model(_cfg("DefectStandardROIHeads", "soft"))


def test_bad_sinkhorn_param_names_the_key():
    cfg = _cfg("DefectStandardROIHeads", "sinkhorn")
    cfg.MODEL.SINKHORN_NMS.TAU = 0.0
    with pytest.raises(ValueError, match="MODEL.SINKHORN_NMS.*tau"):
        build_model(cfg)
