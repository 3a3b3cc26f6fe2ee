"""Detectron2 box post-processing with Sinkhorn NMS instead of per-class hard NMS.

:func:`sinkhorn_fast_rcnn_inference` has the signature and outputs of Detectron2's
``fast_rcnn_inference`` (plus the Sinkhorn parameters): it applies the same finite-value filter,
background-column drop, clipping and score threshold per image, then runs ONE batched
:func:`defect_det.layers.sinkhorn_nms` over all images and keeps the ``topk_per_image`` best regions.
"""
from typing import List, Tuple

import torch
from detectron2.structures import Boxes, Instances

from ...layers.sinkhorn_nms import SinkhornNMSParams, pad_candidates, sinkhorn_nms

__all__ = ["sinkhorn_fast_rcnn_inference", "candidates_from_predictions"]


def candidates_from_predictions(boxes, scores, image_shape, score_thresh):
    """Detectron2's per-image filtering: boxes (R, C*4) or (R, 4), scores (R, C+1) ->
    candidate boxes (n, 4), scores (n,), classes (n,), proposal index (n,)."""
    valid = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores).all(dim=1)
    idx = valid.nonzero().squeeze(1)
    boxes, scores = boxes[idx], scores[idx, :-1]
    num_reg = boxes.shape[1] // 4
    b = Boxes(boxes.reshape(-1, 4))
    b.clip(image_shape)
    boxes = b.tensor.view(-1, num_reg, 4)
    keep = scores > score_thresh
    inds = keep.nonzero()  # (n, 2): proposal, class
    boxes = boxes[inds[:, 0], 0] if num_reg == 1 else boxes[keep]
    return boxes, scores[keep], inds[:, 1], idx[inds[:, 0]]


def sinkhorn_fast_rcnn_inference(
    boxes: List[torch.Tensor],
    scores: List[torch.Tensor],
    image_shapes: List[Tuple[int, int]],
    score_thresh: float,
    nms_thresh: float,
    topk_per_image: int,
    params: SinkhornNMSParams,
):
    """Like Detectron2's ``fast_rcnn_inference``; ``nms_thresh`` is the seeding IoU.

    Returns ``(instances, kept_indices)``: per image an ``Instances`` with ``pred_boxes`` (the
    fused region boxes), ``scores`` (fused region scores), ``pred_classes``, and the index of the
    proposal each region's representative detection came from.
    """
    cands = [candidates_from_predictions(b, s, shape, score_thresh)
             for b, s, shape in zip(boxes, scores, image_shapes)]
    ref = boxes[0] if boxes else torch.zeros(0, 4)
    cb, cs, cc, cm = pad_candidates([c[:3] for c in cands], ref)
    p = SinkhornNMSParams(**{**params.__dict__, "seed_iou": nms_thresh})
    res = sinkhorn_nms(cb, cs, cc, cm, params=p)
    results, kept = [], []
    for i, (_, _, _, prop_idx) in enumerate(cands):
        valid = res.valid[i].nonzero().squeeze(1)
        order = res.scores[i, valid].argsort(descending=True)
        if topk_per_image >= 0:
            order = order[:topk_per_image]
        sel = valid[order]
        inst = Instances(image_shapes[i])
        inst.pred_boxes = Boxes(res.boxes[i, sel].to(ref.dtype))
        inst.scores = res.scores[i, sel].to(ref.dtype)
        inst.pred_classes = res.classes[i, sel]
        results.append(inst)
        kept.append(prop_idx[res.rep[i, sel]] if prop_idx.numel() else prop_idx)
    return results, kept
