"""Sinkhorn NMS as the ROI heads' box post-processor (``MODEL.ROI_HEADS.NMS_TYPE: "sinkhorn"``).

:class:`SinkhornNMS` is registered in :data:`~defect_det.modeling.roi_heads.BOX_POSTPROCESSOR_REGISTRY`:
every defect_det box head (Standard, Cascade, RDDN) calls it through the same seam as hard NMS; with
``MODEL.SINKHORN_NMS.E2E_LOSS_WEIGHT > 0`` it also gives the training loss computed after the
suppression (:func:`~.loss.sinkhorn_nms_matching_loss`).

:func:`sinkhorn_fast_rcnn_inference` has the signature and outputs of Detectron2's
``fast_rcnn_inference`` (plus the Sinkhorn parameters): it applies the same finite-value filter,
background-column drop, clipping and score threshold per image, then runs ONE batched
:func:`defect_det.sinkhorn_nms.sinkhorn_nms` over all images and keeps the ``topk_per_image`` best regions.
"""
from typing import List, Tuple

import torch
from detectron2.structures import Boxes, Instances

from ..modeling.roi_heads.postprocess import BOX_POSTPROCESSOR_REGISTRY, BoxPostProcessor, candidates_from_predictions
from .loss import sinkhorn_nms_matching_loss
from .nms import SinkhornNMSParams, pad_candidates, sinkhorn_nms

__all__ = ["SinkhornNMS", "candidates_from_predictions", "sinkhorn_fast_rcnn_inference", "sinkhorn_nms_params_from_cfg"]


def sinkhorn_nms_params_from_cfg(cfg) -> SinkhornNMSParams:
    """``MODEL.SINKHORN_NMS.*`` -> :class:`SinkhornNMSParams` (validated, errors name the key)."""
    c = cfg.MODEL.SINKHORN_NMS
    p = SinkhornNMSParams(
        alpha=c.ALPHA, beta=c.BETA, gamma=c.GAMMA, tau=c.TAU, spatial=c.SPATIAL,
        dustbin_cost=c.DUSTBIN_COST, seed_iou=cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST,
        max_regions=c.MAX_REGIONS, refine_iters=c.REFINE_ITERS, sinkhorn_iters=c.SINKHORN_ITERS,
        score_power=c.SCORE_POWER, mode=c.MODE, iou_floor=c.IOU_FLOOR, tol=c.TOL, warm_start=c.WARM_START,
    )
    try:
        return p.check()
    except ValueError as e:
        raise ValueError(f"MODEL.SINKHORN_NMS: {e}") from None


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
    res = sinkhorn_nms(cb, cs, cc, cm, params=p, return_plan=False)
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


@BOX_POSTPROCESSOR_REGISTRY.register()
class SinkhornNMS(BoxPostProcessor):
    """Sinkhorn NMS over every image of the batch at once (:func:`sinkhorn_fast_rcnn_inference`); seeding
    IoU ``MODEL.ROI_HEADS.NMS_THRESH_TEST``, ``TEST.DETECTIONS_PER_IMAGE`` regions per image. Training
    loss ``loss_sinkhorn_nms`` with weight ``MODEL.SINKHORN_NMS.E2E_LOSS_WEIGHT`` (0 = none) over the
    ``E2E_TOPK`` best candidates per image."""

    def __init__(self, cfg=None, *, params: SinkhornNMSParams = None, nms_thresh: float = 0.5,
                 topk_per_image: int = 100, e2e_loss_weight: float = 0.0, e2e_topk: int = 300,
                 e2e_warmup_iters: int = 0):
        if cfg is not None:
            params = sinkhorn_nms_params_from_cfg(cfg)
            nms_thresh, topk_per_image = cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST, cfg.TEST.DETECTIONS_PER_IMAGE
            e2e_loss_weight, e2e_topk = cfg.MODEL.SINKHORN_NMS.E2E_LOSS_WEIGHT, cfg.MODEL.SINKHORN_NMS.E2E_TOPK
            e2e_warmup_iters = cfg.MODEL.SINKHORN_NMS.E2E_WARMUP_ITERS
        if e2e_loss_weight < 0:
            raise ValueError(f"MODEL.SINKHORN_NMS.E2E_LOSS_WEIGHT must be >= 0, got {e2e_loss_weight}")
        if e2e_warmup_iters < 0:
            raise ValueError(f"MODEL.SINKHORN_NMS.E2E_WARMUP_ITERS must be >= 0, got {e2e_warmup_iters}")
        self.params = params or SinkhornNMSParams()
        self.nms_thresh = float(nms_thresh)
        self.topk_per_image = int(topk_per_image)
        self.e2e_loss_weight = float(e2e_loss_weight)
        self.e2e_topk = int(e2e_topk)
        self.e2e_warmup_iters = int(e2e_warmup_iters)
        self.has_losses = self.e2e_loss_weight > 0

    def __call__(self, boxes, scores, image_shapes, score_thresh):
        return sinkhorn_fast_rcnn_inference(boxes, scores, image_shapes, score_thresh, self.nms_thresh,
                                            self.topk_per_image, self.params)

    def losses(self, boxes, scores, proposals, num_classes, score_thresh):
        """``{"loss_sinkhorn_nms": weight * ramp * loss}`` ({} with weight 0); ``ramp = min(1, (iter + 1) /
        E2E_WARMUP_ITERS)`` (1 without warm-up), iter from the EventStorage — the loss weight rises linearly,
        e.g. when fine-tuning a trained detector through the suppression. The image's ground truths are the
        distinct matched GT boxes of its foreground proposals (Detectron2 appends every GT box to the
        proposals in training)."""
        if self.e2e_loss_weight <= 0:
            return {}
        gt_boxes, gt_classes = [], []
        for p in proposals:
            fg = (p.gt_classes >= 0) & (p.gt_classes < num_classes) if p.has("gt_classes") else None
            if fg is None or not fg.any():
                gt_boxes.append(scores[0].new_zeros(0, 4))
                gt_classes.append(torch.zeros(0, dtype=torch.long, device=scores[0].device))
                continue
            rows = torch.cat([p.gt_boxes.tensor[fg], p.gt_classes[fg, None].to(p.gt_boxes.tensor.dtype)], 1)
            rows = torch.unique(rows, dim=0)
            gt_boxes.append(rows[:, :4])
            gt_classes.append(rows[:, 4].long())
        loss = sinkhorn_nms_matching_loss(boxes, scores, gt_boxes, gt_classes, [p.image_size for p in proposals],
                                          self.params, score_thresh=score_thresh, topk=self.e2e_topk)
        ramp = 1.0
        if self.e2e_warmup_iters > 0:
            from detectron2.utils.events import get_event_storage

            ramp = min(1.0, (get_event_storage().iter + 1) / self.e2e_warmup_iters)
        return {"loss_sinkhorn_nms": (self.e2e_loss_weight * ramp) * loss}
