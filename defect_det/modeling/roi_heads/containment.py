"""
Containment suppression of the final detections (issue 11).

Per-class NMS removes a detection that overlaps a better one with IoU > NMS_THRESH_TEST, but not a
*fragment*: a box covering a third of a long seam has IoU ~0.3 with the box of the whole seam and
survives. On the synthetic fabric benchmark such fragments are the largest group of high-scoring
false positives (``tools/detection_errors.py``: "poor_loc", median area ~0.3-0.5 of the defect).

After NMS, detection ``i`` is dropped when a kept detection ``j`` of the same class with a higher score
covers at least ``thresh`` of its area:

    |B_i ∩ B_j| / |B_i| >= thresh,    s_j >= s_i,    c_j = c_i        (greedy, in decreasing score)

``thresh`` is chosen on validation (``MODEL.ROI_HEADS.CONTAIN_THRESH_TEST``; 0 = off).

Cross-class suppression: per-class NMS also keeps a second box of *another* class on the same defect
(the box classifier hesitating between, e.g., a knot and a stain), which counts as a false positive of
that class. With ``MODEL.ROI_HEADS.CROSS_CLASS_IOU_TEST`` = t > 0, detection ``i`` is then dropped when a
kept, better-scored detection of a different class overlaps it with

    IoU(B_i, B_j) >= t,    s_j >= s_i,    c_j != c_i                   (greedy, in decreasing score)

i.e. class-agnostic NMS at IoU t on top of per-class NMS (t = 1 would never fire; 0 = off). Both run in
one greedy pass (a detection is dropped if either rule fires). Mask prediction runs on the boxes that remain.
"""
from typing import List

import torch
from detectron2.structures import Instances
from detectron2.structures.boxes import pairwise_intersection, pairwise_iou

__all__ = ["suppress_contained", "ContainmentMixin"]


def suppress_contained(instances: Instances, thresh: float, cross_class_iou: float = 0.0) -> Instances:
    """
    Args:
        instances: one image's detections with ``pred_boxes`` (N boxes), ``scores`` (N,), ``pred_classes`` (N,).
        thresh: share of a detection's area inside a better same-class detection above which it is
            dropped; ``<= 0``: off.
        cross_class_iou: IoU with a better detection of another class above which it is dropped; ``<= 0``: off.
    Returns:
        the kept detections, in decreasing score (``instances`` unchanged when both rules are off).
    """
    if (thresh <= 0 and cross_class_iou <= 0) or (len(instances) < 2 and not torch.jit.is_tracing()):
        return instances
    order = instances.scores.argsort(descending=True)
    inst = instances[order]
    boxes = inst.pred_boxes
    same = inst.pred_classes[:, None] == inst.pred_classes[None, :]
    suppress = torch.zeros_like(same)
    if thresh > 0:
        # (N, N): share of box i inside box j
        covered = pairwise_intersection(boxes, boxes) / boxes.area().clamp(min=1e-6)[:, None]
        suppress = suppress | ((covered >= thresh) & same)  # not in place: ONNX has no __ior__
    if cross_class_iou > 0:
        suppress = suppress | ((pairwise_iou(boxes, boxes) >= cross_class_iou) & ~same)
    return inst[_greedy_keep(suppress)]


@torch.jit.script_if_tracing
def _greedy_keep(suppress: torch.Tensor) -> torch.Tensor:
    """(N, N) bool, ``suppress[i, j]``: detection j (better-scored when j < i) would drop i ->
    (N,) bool, the greedy keep mask. Scripted when traced, so an exported model keeps the loop over
    however many detections it gets (tools/export_model.py)."""
    n = suppress.shape[0]
    keep = torch.ones(n, dtype=torch.bool, device=suppress.device)
    for i in range(1, n):
        # any better-scored (earlier), still kept detection that covers i
        if bool((suppress[i, :i] & keep[:i]).any()):
            keep[i] = False
    return keep


class ContainmentMixin:
    """Applies :func:`suppress_contained` to the final detections of a Detectron2 ``ROIHeads`` at
    inference (in ``forward_with_given_boxes``, before masks). Put it before the Detectron2 class in
    the bases; its ``from_config`` reads ``MODEL.ROI_HEADS.CONTAIN_THRESH_TEST`` and
    ``MODEL.ROI_HEADS.CROSS_CLASS_IOU_TEST``."""

    def __init__(self, *, contain_thresh_test: float = 0.0, cross_class_iou_test: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= contain_thresh_test <= 1.0:
            raise ValueError(f"MODEL.ROI_HEADS.CONTAIN_THRESH_TEST must be in [0, 1], got {contain_thresh_test}")
        if not 0.0 <= cross_class_iou_test <= 1.0:
            raise ValueError(f"MODEL.ROI_HEADS.CROSS_CLASS_IOU_TEST must be in [0, 1], got {cross_class_iou_test}")
        self.contain_thresh_test = contain_thresh_test
        self.cross_class_iou_test = cross_class_iou_test

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret["contain_thresh_test"] = float(cfg.MODEL.ROI_HEADS.CONTAIN_THRESH_TEST)
        ret["cross_class_iou_test"] = float(cfg.MODEL.ROI_HEADS.CROSS_CLASS_IOU_TEST)
        return ret

    def forward_with_given_boxes(self, features, instances: List[Instances]):
        instances = [suppress_contained(x, self.contain_thresh_test, self.cross_class_iou_test) for x in instances]
        return super().forward_with_given_boxes(features, instances)
