"""Soft-NMS (Bodla et al., ICCV 2017) as a box post-processor (``MODEL.ROI_HEADS.NMS_TYPE: "soft"``).

Neither torchvision nor Detectron2 has Soft-NMS. Greedy, per class: take the highest-scored candidate M,
keep it, and decay the score of every other candidate b of its class by

    linear:    s_b <- s_b * (1 - IoU(M, b))       if IoU(M, b) >= N_t (else unchanged)
    gaussian:  s_b <- s_b * exp(-IoU(M, b)^2 / sigma)

then repeat on the rest; candidates whose score falls below ``min_score`` are dropped. Detections are
returned in the order they were taken, with the score they had when taken (scores only decrease, so
that order is by score and stopping after ``topk`` detections gives exactly the top ``topk``).

Batched: every image and every class of a batch at once. Classes are separated by offsetting each box
by ``class * (max coordinate + 1)`` (boxes of different classes never overlap, Detectron2's
``batched_nms`` trick), images by padding to (B, N); each of the at most ``topk`` steps picks the best
remaining candidate of every image in one ``argmax`` and decays its row of the (B, N, N) IoU matrix.
``N_t`` is ``MODEL.ROI_HEADS.NMS_THRESH_TEST``; ``sigma``, the method and ``min_score`` are
``MODEL.ROI_HEADS.SOFT_NMS.*``; the input score threshold (``SCORE_THRESH_TEST``) applies before.
"""
from typing import List, Tuple

import torch
from detectron2.structures import Boxes, Instances

from .postprocess import BOX_POSTPROCESSOR_REGISTRY, BoxPostProcessor, candidates_from_predictions

__all__ = ["SOFT_NMS_METHODS", "SoftNMS", "soft_nms"]

SOFT_NMS_METHODS = ("linear", "gaussian")


def _pairwise_iou(boxes: torch.Tensor) -> torch.Tensor:
    """(B, N, 4) XYXY -> (B, N, N) IoU."""
    area = (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)
    lt = torch.maximum(boxes[:, :, None, :2], boxes[:, None, :, :2])
    rb = torch.minimum(boxes[:, :, None, 2:], boxes[:, None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = area[:, :, None] + area[:, None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def soft_nms(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, valid: torch.Tensor,
             method: str = "gaussian", sigma: float = 0.5, iou_thresh: float = 0.3, min_score: float = 1e-3,
             topk: int = 100) -> Tuple[torch.Tensor, torch.Tensor]:
    """
    Batched Soft-NMS (module doc).

    Args:
        boxes: (B, N, 4) XYXY candidate boxes (padded).
        scores: (B, N) their scores.
        classes: (B, N) int class of each candidate; suppression only within a class.
        valid: (B, N) bool, False on padding.
        method: "linear" | "gaussian"; sigma: gaussian width; iou_thresh: N_t of the linear decay.
        min_score: candidates whose (decayed) score is below this are dropped.
        topk: at most this many detections per image (< 0: all).
    Returns:
        (index (B, K) long: the candidates taken, in order, -1 after the last one of an image;
         score (B, K): their scores when taken, 0 where index is -1), K = min(topk, N).
    """
    if method not in SOFT_NMS_METHODS:
        raise ValueError(f"MODEL.ROI_HEADS.SOFT_NMS.METHOD must be one of {SOFT_NMS_METHODS}, got {method!r}")
    if method == "gaussian" and sigma <= 0:
        raise ValueError(f"MODEL.ROI_HEADS.SOFT_NMS.SIGMA must be > 0, got {sigma}")
    b, n = scores.shape
    k = n if topk < 0 else min(topk, n)
    index = torch.full((b, k), -1, dtype=torch.long, device=scores.device)
    taken_scores = scores.new_zeros(b, k)
    if n == 0 or k == 0:
        return index, taken_scores
    # classes apart: offset every box by its class times a span larger than any coordinate
    span = boxes.abs().max() + 1.0
    iou = _pairwise_iou(boxes + (classes.to(boxes.dtype) * span)[..., None])
    if method == "linear":
        decay = torch.where(iou >= iou_thresh, 1.0 - iou, torch.ones_like(iou))
    else:
        decay = torch.exp(-(iou * iou) / sigma)
    s = torch.where(valid & (scores >= min_score), scores, torch.full_like(scores, -1.0))
    rows = torch.arange(b, device=scores.device)
    for step in range(k):
        best, arg = s.max(dim=1)
        alive = best >= min_score
        if not bool(alive.any()):
            break
        index[:, step] = torch.where(alive, arg, torch.full_like(arg, -1))
        taken_scores[:, step] = torch.where(alive, best, torch.zeros_like(best))
        s[rows, arg] = -1.0                                       # taken (or already dead)
        s = torch.where(s >= 0, s * decay[rows, arg], s)          # decay the others of the image
        s = torch.where((s >= 0) & (s < min_score), torch.full_like(s, -1.0), s)
    return index, taken_scores


@BOX_POSTPROCESSOR_REGISTRY.register()
class SoftNMS(BoxPostProcessor):
    """Soft-NMS as the ROI heads' post-processing (``NMS_TYPE: "soft"``; module doc)."""

    def __init__(self, cfg=None, *, method: str = "gaussian", sigma: float = 0.5, iou_thresh: float = 0.5,
                 min_score: float = 1e-3, topk_per_image: int = 100):
        if cfg is not None:
            c = cfg.MODEL.ROI_HEADS.SOFT_NMS
            method, sigma, min_score = c.METHOD, c.SIGMA, c.MIN_SCORE
            iou_thresh, topk_per_image = cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST, cfg.TEST.DETECTIONS_PER_IMAGE
        if method not in SOFT_NMS_METHODS:
            raise ValueError(f"MODEL.ROI_HEADS.SOFT_NMS.METHOD must be one of {SOFT_NMS_METHODS}, got {method!r}")
        if sigma <= 0:
            raise ValueError(f"MODEL.ROI_HEADS.SOFT_NMS.SIGMA must be > 0, got {sigma}")
        self.method, self.sigma, self.iou_thresh = method, float(sigma), float(iou_thresh)
        self.min_score, self.topk_per_image = float(min_score), int(topk_per_image)

    def __call__(self, boxes: List[torch.Tensor], scores: List[torch.Tensor], image_shapes, score_thresh: float):
        cands = [candidates_from_predictions(b, s, shape, score_thresh)
                 for b, s, shape in zip(boxes, scores, image_shapes)]
        ref = boxes[0] if boxes else torch.zeros(0, 4)
        n = max([len(c[1]) for c in cands] + [0])
        bsz = len(cands)
        pb, ps = ref.new_zeros(bsz, n, 4), ref.new_zeros(bsz, n)
        pc = torch.zeros(bsz, n, dtype=torch.long, device=ref.device)
        pv = torch.zeros(bsz, n, dtype=torch.bool, device=ref.device)
        for i, (cb, cs, cc, _) in enumerate(cands):
            m = len(cs)
            pb[i, :m], ps[i, :m], pc[i, :m], pv[i, :m] = cb, cs, cc, True
        index, taken = soft_nms(pb, ps, pc, pv, self.method, self.sigma, self.iou_thresh, self.min_score,
                                self.topk_per_image)
        results, kept = [], []
        for i, (_, _, _, prop_idx) in enumerate(cands):
            sel = index[i][index[i] >= 0]
            inst = Instances(image_shapes[i])
            inst.pred_boxes = Boxes(pb[i, sel])
            inst.scores = taken[i, : len(sel)]
            inst.pred_classes = pc[i, sel]
            results.append(inst)
            kept.append(prop_idx[sel])
        return results, kept
