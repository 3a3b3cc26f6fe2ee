"""Jittered ground-truth proposals (defect_det/modeling/roi_heads/proposal_jitter.py)."""
import os

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances, pairwise_iou
from detectron2.utils.events import EventStorage

from defect_det.config import get_defect_cfg
from defect_det.modeling.roi_heads import add_jittered_gt_proposals, gt_jitter_from_cfg, jitter_boxes

from conftest import REPO  # noqa: E402


def test_jitter_boxes_iou_spread_matches_sigma():
    g = torch.Generator().manual_seed(0)
    gt = torch.tensor([[10.0, 20.0, 110.0, 40.0]])  # a 100 x 20 box (shape does not matter: jitter is relative)
    boxes = jitter_boxes(gt, 4000, 0.2, generator=g)
    assert boxes.shape == (4000, 4)
    iou = pairwise_iou(Boxes(gt), Boxes(boxes))[0]
    pos = (iou >= 0.5).float().mean().item()
    near = ((iou > 0.1) & (iou < 0.5)).float().mean().item()
    # the module documents ~57% / ~43% for sigma 0.2 (4000 draws: +-2.5% is > 3 standard errors)
    assert 0.52 < pos < 0.62 and 0.38 < near < 0.48
    small = pairwise_iou(Boxes(gt), Boxes(jitter_boxes(gt, 4000, 0.05, generator=g)))[0]
    assert (small >= 0.5).all()


def test_jitter_boxes_empty_and_zero():
    assert jitter_boxes(torch.zeros((0, 4)), 8, 0.2).shape == (0, 4)
    assert jitter_boxes(torch.tensor([[0.0, 0.0, 5.0, 5.0]]), 0, 0.2).shape == (0, 4)


def _inputs(image_size=(64, 80)):
    props = Instances(image_size)
    props.proposal_boxes = Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0], [40.0, 30.0, 60.0, 50.0]]))
    props.objectness_logits = torch.tensor([0.5, -1.0])
    tgt = Instances(image_size)
    tgt.gt_boxes = Boxes(torch.tensor([[50.0, 5.0, 79.0, 20.0], [2.0, 40.0, 8.0, 46.0]]))
    tgt.gt_classes = torch.tensor([3, 7])
    return props, tgt


def test_add_jittered_gt_proposals_appends_clipped_copies():
    torch.manual_seed(0)
    props, tgt = _inputs()
    (out,) = add_jittered_gt_proposals([props], [tgt], num_per_gt=6, sigma=0.3)
    assert 2 < len(out) <= 2 + 12
    assert torch.equal(out.proposal_boxes.tensor[:2], props.proposal_boxes.tensor)
    new = out.proposal_boxes.tensor[2:]
    h, w = props.image_size
    assert (new[:, 0] >= 0).all() and (new[:, 2] <= w).all() and (new[:, 1] >= 0).all() and (new[:, 3] <= h).all()
    assert out.proposal_boxes[2:].nonempty().all()
    assert (out.objectness_logits[2:] > 20).all()  # the ground-truth logit, as Detectron2 gives appended GT
    # every copy overlaps the box it came from
    assert (pairwise_iou(tgt.gt_boxes, out.proposal_boxes[2:]).max(0).values > 0).all()
    assert add_jittered_gt_proposals([props], [tgt], 0, 0.2)[0] is props


def _cfg(config, num):
    cfg = get_defect_cfg()
    cfg.merge_from_file(os.path.join(REPO, config))
    cfg.MODEL.ROI_HEADS.GT_JITTER.NUM_PER_GT = num
    return cfg


@pytest.mark.parametrize("config", ["configs/RDDN/synthetic/faster_rcnn_R18_FPN_pre_align.yaml",
                                    "configs/RDDN/synthetic/cascade_rcnn_R18_FPN.yaml",
                                    "configs/synthetic/faster_rcnn_R18_FPN_cpu.yaml"])
def test_heads_sample_more_foreground_with_jitter(config):
    """The registered heads read the key and their sampled ROIs hold more foreground with it."""
    fg = {}
    for num in (0, 16):
        torch.manual_seed(0)
        heads = build_model(_cfg(config, num)).roi_heads
        assert heads.gt_jitter_num == num
        heads.train()
        props, tgt = _inputs()
        with EventStorage():
            (sampled,) = heads.label_and_sample_proposals([props], [tgt])
        fg[num] = int((sampled.gt_classes < heads.num_classes).sum())
    assert fg[0] == 2  # only the appended ground truth: the two proposals miss both boxes
    assert fg[16] > 2


def test_bad_jitter_config_names_the_key():
    cfg = _cfg("configs/synthetic/faster_rcnn_R18_FPN_cpu.yaml", -1)
    with pytest.raises(ValueError, match="GT_JITTER.NUM_PER_GT"):
        gt_jitter_from_cfg(cfg)
    cfg.MODEL.ROI_HEADS.GT_JITTER.NUM_PER_GT = 4
    cfg.MODEL.ROI_HEADS.GT_JITTER.SIGMA = 0.0
    with pytest.raises(ValueError, match="GT_JITTER.SIGMA"):
        gt_jitter_from_cfg(cfg)


def test_anchor_stats_tool_counts_matches(tiny_fabric):
    """defect_det.utils.anchor_stats (tools/anchor_stats.py): a box equal to an anchor has best IoU 1;
    larger anchor sets fit better."""
    from detectron2.data import DatasetCatalog
    from detectron2.structures import BoxMode

    from defect_det.utils import anchor_stats as tool

    cfg = get_defect_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs/synthetic/faster_rcnn_R18_FPN_cpu.yaml"))
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 128, 1000
    # one 160 x 128 image whose box is exactly the 32 x 32 anchor centred at (64, 64) on p3 (stride 8)
    d = {"height": 128, "width": 160, "annotations": [{"bbox": [48, 48, 80, 80], "bbox_mode": BoxMode.XYXY_ABS,
                                                        "category_id": 0}]}
    s = tool.anchor_stats(cfg, [d], (0.5, 0.99))
    assert s["all"]["best_iou_mean"] == pytest.approx(1.0) and s["all"]["above_0.99_per_box"] >= 1
    data = DatasetCatalog.get(tiny_fabric["names"]["train"])
    base = tool.anchor_stats(cfg, data)["all"]
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[8, 11, 16], [22, 32, 45], [64, 90, 128], [181, 256, 362]]
    more = tool.anchor_stats(cfg, data)["all"]
    assert more["boxes"] == base["boxes"] > 0
    assert more["best_iou_mean"] >= base["best_iou_mean"] and more["above_0.5_per_box"] > base["above_0.5_per_box"]


def _dets(boxes, scores, classes, size=(100, 200)):
    inst = Instances(size)
    inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    inst.scores = torch.tensor(scores)
    inst.pred_classes = torch.tensor(classes)
    return inst


def test_suppress_contained_drops_fragments_of_same_class_only():
    from defect_det.modeling.roi_heads import suppress_contained

    seam = [0.0, 10.0, 200.0, 20.0]
    dets = _dets([[10.0, 10.0, 70.0, 20.0],   # fragment of the seam, lower score: dropped
                  seam,
                  [100.0, 12.0, 150.0, 20.0],  # fragment, but another class: kept
                  [150.0, 5.0, 210.0, 25.0]],  # half outside the seam box (covered 0.17): kept
                 [0.5, 0.9, 0.4, 0.3], [1, 1, 2, 1])
    out = suppress_contained(dets, 0.6)
    assert out.pred_boxes.tensor.tolist() == [seam, [100.0, 12.0, 150.0, 20.0], [150.0, 5.0, 210.0, 25.0]]
    assert out.scores.tolist() == pytest.approx([0.9, 0.4, 0.3])
    # a better-scored fragment is kept (only lower scores are suppressed), and 0 disables the step
    frag_first = _dets([[10.0, 10.0, 70.0, 20.0], seam], [0.95, 0.9], [1, 1])
    assert len(suppress_contained(frag_first, 0.6)) == 2
    assert suppress_contained(dets, 0.0) is dets


def test_cross_class_suppression_drops_a_worse_box_of_another_class_on_the_same_defect():
    from defect_det.modeling.roi_heads import suppress_contained

    knot = [50.0, 50.0, 70.0, 70.0]
    dets = _dets([[51.0, 50.0, 71.0, 70.0],   # same place, other class, lower score: dropped (IoU 0.9)
                  knot,
                  [60.0, 50.0, 80.0, 70.0],   # other class, IoU 1/3 with the knot: kept
                  [50.0, 51.0, 70.0, 71.0]],  # same class, IoU 0.9: per-class NMS's business, kept here
                 [0.6, 0.9, 0.5, 0.4], [2, 1, 3, 1])
    out = suppress_contained(dets, 0.0, cross_class_iou=0.7)
    assert out.pred_classes.tolist() == [1, 3, 1] and out.scores.tolist() == pytest.approx([0.9, 0.5, 0.4])
    # a dropped detection suppresses nothing: 0 (knot) drops 1 (class 2); 2 (class 3) overlaps only 1 enough
    chain = _dets([knot, [55.0, 50.0, 75.0, 70.0], [60.0, 50.0, 80.0, 70.0]], [0.9, 0.8, 0.7], [1, 2, 3])
    assert suppress_contained(chain, 0.0, cross_class_iou=0.55).pred_classes.tolist() == [1, 3]
    # both rules together, each on its own kind of pair
    both = suppress_contained(dets, 0.6, cross_class_iou=0.7)
    assert both.pred_classes.tolist() == [1, 3]
    assert suppress_contained(dets, 0.0, cross_class_iou=0.0) is dets


def test_heads_apply_containment_at_inference():
    cfg = _cfg("configs/RDDN/synthetic/faster_rcnn_R18_FPN_pre_align.yaml", 0)
    cfg.MODEL.ROI_HEADS.CONTAIN_THRESH_TEST = 0.6
    heads = build_model(cfg).roi_heads.eval()
    assert heads.contain_thresh_test == 0.6
    dets = _dets([[10.0, 10.0, 70.0, 20.0], [0.0, 10.0, 200.0, 20.0]], [0.5, 0.9], [1, 1])
    (out,) = heads.forward_with_given_boxes({}, [dets])
    assert len(out) == 1 and out.scores.item() == pytest.approx(0.9)
    cfg.MODEL.ROI_HEADS.CONTAIN_THRESH_TEST = 1.5
    with pytest.raises(ValueError, match="CONTAIN_THRESH_TEST"):
        build_model(cfg)
    cfg.MODEL.ROI_HEADS.CONTAIN_THRESH_TEST = 0.0
    cfg.MODEL.ROI_HEADS.CROSS_CLASS_IOU_TEST = 0.7
    heads = build_model(cfg).roi_heads.eval()
    (out,) = heads.forward_with_given_boxes({}, [_dets([[10.0, 10.0, 70.0, 20.0], [11.0, 10.0, 70.0, 20.0]],
                                                       [0.5, 0.9], [1, 2])])
    assert out.pred_classes.tolist() == [2]
    cfg.MODEL.ROI_HEADS.CROSS_CLASS_IOU_TEST = -0.1
    with pytest.raises(ValueError, match="CROSS_CLASS_IOU_TEST"):
        build_model(cfg)
