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
    cfg = _cfg(ours, "hard", cascade=cascade)
    cfg.MODEL.ROI_HEADS.CONTAIN_THRESH_TEST = 0.0  # the CPU config's containment step is ours, not Detectron2's
    _, out = _run(cfg, m.state_dict())
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
        build_model(_cfg("DefectStandardROIHeads", "fancy"))


def test_bad_sinkhorn_param_names_the_key():
    cfg = _cfg("DefectStandardROIHeads", "sinkhorn")
    cfg.MODEL.SINKHORN_NMS.TAU = 0.0
    with pytest.raises(ValueError, match="MODEL.SINKHORN_NMS.*tau"):
        build_model(cfg)


def test_e2e_loss_gradient_reaches_detections_hard_nms_suppresses():
    from detectron2.structures import Boxes, Instances
    from torchvision.ops import batched_nms

    from defect_det.sinkhorn_nms.nms import SinkhornNMSParams
    from defect_det.sinkhorn_nms.loss import sinkhorn_nms_matching_loss

    # three proposals of class 0: two duplicates of the GT, one elsewhere; 2 classes + background
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [30, 30, 40, 40.]]).repeat(1, 2).requires_grad_()
    logits = torch.tensor([[3.0, 0.0, 0.0], [2.0, 0.0, 0.0], [1.0, 0.0, 0.5]], requires_grad=True)
    probs = logits.softmax(1)
    gt_b, gt_c = torch.tensor([[0, 0, 10, 10.]]), torch.tensor([0])
    loss = sinkhorn_nms_matching_loss([boxes], [probs], [gt_b], [gt_c], [(64, 64)], SinkhornNMSParams())
    loss.backward()
    assert torch.isfinite(loss)
    # hard NMS suppresses proposal 1 (class 0): no gradient could reach it through hard NMS
    keep = batched_nms(boxes.detach()[:, :4], probs.detach()[:, 0], torch.zeros(3, dtype=torch.long), 0.5)
    assert 1 not in keep.tolist()
    assert logits.grad[1].abs().sum() > 0 and boxes.grad[1].abs().sum() > 0


def test_e2e_training_smoke(tiny_fabric, tmp_path):
    from defect_det.engine import DefectTrainer
    from conftest import tiny_cfg

    cfg = tiny_cfg(tiny_fabric["names"], tmp_path, **{
        "MODEL.ROI_HEADS.NAME": "DefectStandardROIHeads", "MODEL.ROI_HEADS.NMS_TYPE": "sinkhorn",
        "MODEL.SINKHORN_NMS.E2E_LOSS_WEIGHT": "1.0", "SOLVER.MAX_ITER": "6", "TEST.EVAL_PERIOD": "0",
    })
    cfg.DATASETS.TEST = ()
    trainer = DefectTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    hist = trainer.storage.history("loss_sinkhorn_nms").values()
    assert len(hist) == 6 and all(torch.isfinite(torch.tensor(v)) for v, _ in hist)


def test_e2e_loss_weight_ramps_in_over_the_warmup():
    """E2E_WARMUP_ITERS: the end-to-end loss weight rises linearly to E2E_LOSS_WEIGHT."""
    from detectron2.structures import Boxes, Instances
    from detectron2.utils.events import EventStorage

    from defect_det.sinkhorn_nms import SinkhornNMS

    torch.manual_seed(0)
    boxes = [torch.tensor([[10.0, 10.0, 40.0, 40.0], [12.0, 11.0, 41.0, 42.0], [60.0, 60.0, 90.0, 80.0]])]
    scores = [torch.tensor([[0.8, 0.2], [0.6, 0.4], [0.7, 0.3]])]
    prop = Instances((100, 100))
    prop.proposal_boxes = Boxes(boxes[0])
    prop.gt_boxes = Boxes(torch.tensor([[10.0, 10.0, 40.0, 40.0]] * 3))
    prop.gt_classes = torch.tensor([0, 0, 1])  # the third is background (num_classes 1)
    values = []
    for it in (0, 49, 99, 300):
        post = SinkhornNMS(e2e_loss_weight=2.0, e2e_warmup_iters=100)
        with EventStorage(it):
            values.append(float(post.losses(boxes, scores, [prop], 1, 0.05)["loss_sinkhorn_nms"]))
    full = values[-1]
    assert full > 0 and values == pytest.approx([full / 100, full / 2, full, full], rel=1e-5)
    with pytest.raises(ValueError, match="E2E_WARMUP_ITERS"):
        SinkhornNMS(e2e_warmup_iters=-1)
