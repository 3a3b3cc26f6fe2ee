"""Weighted box fusion (Solovyev et al., 2021) of one detector's candidates as a box post-processor
(``MODEL.ROI_HEADS.NMS_TYPE: "wbf"``), the second classical alternative to NMS of issue 14.

Per image and class, candidates are taken in decreasing score; each joins the first cluster whose *fused*
box it overlaps with IoU > ``MODEL.ROI_HEADS.WBF.IOU_THRESH`` (0.55, the paper's default), else it opens a
new cluster. A cluster's fused box is the score-weighted mean of its members' boxes, its score the mean of
their scores (the paper's confidence with one model: ``mean score * min(T, n) / T``, T = 1 model).
Clusters are returned in decreasing fused score, at most ``TEST.DETECTIONS_PER_IMAGE``; the proposal index
of a cluster is that of its best member. Unlike NMS, every candidate contributes to a box.
"""
from typing import List, Tuple

import torch
from detectron2.structures import Boxes, Instances

from .postprocess import BOX_POSTPROCESSOR_REGISTRY, BoxPostProcessor, candidates_from_predictions

__all__ = ["WeightedBoxFusion", "weighted_box_fusion"]


def _iou_one(box: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """(4,) x (M, 4) XYXY -> (M,) IoU."""
    lt = torch.maximum(box[:2], boxes[:, :2])
    rb = torch.minimum(box[2:], boxes[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(1)
    area = (box[2:] - box[:2]).clamp(min=0).prod()
    areas = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0).prod(1)
    union = area + areas - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def weighted_box_fusion(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, iou_thresh: float = 0.55
                        ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """
    WBF of one image's candidates (module doc).

    Args:
        boxes: (n, 4) XYXY; scores: (n,); classes: (n,) int.
        iou_thresh: a candidate joins a cluster of its class when its IoU with the fused box exceeds this.
    Returns:
        fused boxes (k, 4), fused scores (k,), classes (k,), index of each cluster's best candidate (k,),
        in decreasing fused score.
    """
    if not 0.0 <= iou_thresh <= 1.0:
        raise ValueError(f"MODEL.ROI_HEADS.WBF.IOU_THRESH must be in [0, 1], got {iou_thresh}")
    fused, fscore, fcls, best = [], [], [], []
    for c in classes.unique().tolist():
        idx = (classes == c).nonzero().squeeze(1)
        idx = idx[scores[idx].argsort(descending=True)]
        sums = boxes.new_zeros(0, 4)      # score-weighted box sums of the clusters
        weights = scores.new_zeros(0)     # their score sums
        counts: List[int] = []
        firsts: List[int] = []
        for i in idx.tolist():
            s = scores[i]
            j = -1
            if len(counts):
                iou = _iou_one(boxes[i], sums / weights[:, None])
                k = int(iou.argmax())
                if float(iou[k]) > iou_thresh:
                    j = k
            if j < 0:
                sums = torch.cat([sums, (boxes[i] * s)[None]])
                weights = torch.cat([weights, s[None]])
                counts.append(1)
                firsts.append(i)
            else:
                sums = torch.cat([sums[:j], (sums[j] + boxes[i] * s)[None], sums[j + 1:]])
                weights = torch.cat([weights[:j], (weights[j] + s)[None], weights[j + 1:]])
                counts[j] += 1
        if counts:
            n = torch.tensor(counts, dtype=scores.dtype, device=scores.device)
            fused.append(sums / weights[:, None])
            fscore.append(weights / n)
            fcls.append(torch.full((len(counts),), c, dtype=classes.dtype, device=classes.device))
            best.append(torch.tensor(firsts, dtype=torch.long, device=boxes.device))
    if not fused:
        return boxes.new_zeros(0, 4), scores.new_zeros(0), classes.new_zeros(0), torch.zeros(0, dtype=torch.long)
    fb, fs, fc, bi = torch.cat(fused), torch.cat(fscore), torch.cat(fcls), torch.cat(best)
    order = fs.argsort(descending=True)
    return fb[order], fs[order], fc[order], bi[order]


@BOX_POSTPROCESSOR_REGISTRY.register()
class WeightedBoxFusion(BoxPostProcessor):
    """WBF as the ROI heads' post-processing (``NMS_TYPE: "wbf"``; module doc)."""

    def __init__(self, cfg=None, *, iou_thresh: float = 0.55, topk_per_image: int = 100):
        if cfg is not None:
            iou_thresh, topk_per_image = cfg.MODEL.ROI_HEADS.WBF.IOU_THRESH, cfg.TEST.DETECTIONS_PER_IMAGE
        if not 0.0 <= iou_thresh <= 1.0:
            raise ValueError(f"MODEL.ROI_HEADS.WBF.IOU_THRESH must be in [0, 1], got {iou_thresh}")
        self.iou_thresh, self.topk_per_image = float(iou_thresh), int(topk_per_image)

    def __call__(self, boxes: List[torch.Tensor], scores: List[torch.Tensor], image_shapes, score_thresh: float):
        results, kept = [], []
        for b, s, shape in zip(boxes, scores, image_shapes):
            cb, cs, cc, prop = candidates_from_predictions(b, s, shape, score_thresh)
            fb, fs, fc, bi = weighted_box_fusion(cb, cs, cc, self.iou_thresh)
            if self.topk_per_image >= 0:
                fb, fs, fc, bi = fb[: self.topk_per_image], fs[: self.topk_per_image], fc[: self.topk_per_image], \
                    bi[: self.topk_per_image]
            inst = Instances(shape)
            inst.pred_boxes, inst.scores, inst.pred_classes = Boxes(fb), fs, fc
            results.append(inst)
            kept.append(prop[bi.to(prop.device)] if len(bi) else prop[:0])
        return results, kept
