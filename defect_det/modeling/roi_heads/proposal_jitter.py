"""
Jittered ground-truth proposals for training the box head (issue 11).

On the synthetic fabric set an image has ~1.3 defects, and at the start of training the RPN proposes
almost nothing that overlaps them: of the 64 ROIs sampled per image only the appended ground-truth
boxes (and a few proposals) are foreground, so the box classifier sees ~3-8 positives per image and
no *near misses*. Its typical error later is a high score on a fragment of a defect (IoU 0.1-0.5
with the whole box): it was never shown one as background.

During training this adds, for every ground-truth box ``(cx, cy, w, h)``, ``num_per_gt`` boxes

    cx' = cx + sigma * w * n1,   cy' = cy + sigma * h * n2,
    w'  = w * exp(sigma * n3),   h'  = h * exp(sigma * n4),        n_k ~ N(0, 1),

clipped to the image, to the RPN's proposals before Detectron2 labels and samples them. With
``sigma = 0.2`` about 57% of them have IoU >= 0.5 with their box (extra positives at varied IoU for the
classifier and the regressor) and 43% lie in (0.1, 0.5) (hard negatives: fragments and over-large
boxes). Labelling, sampling and the losses are Detectron2's, unchanged; inference is unchanged.
"""
import math
from typing import List

import torch
from detectron2.structures import Boxes, Instances

__all__ = ["jitter_boxes", "add_jittered_gt_proposals", "gt_jitter_from_cfg", "GTJitterMixin"]

# the objectness logit Detectron2 gives appended ground-truth proposals (sigmoid ~ 1 - 1e-10)
_GT_LOGIT = math.log((1.0 - 1e-10) / (1 - (1.0 - 1e-10)))


def jitter_boxes(boxes: torch.Tensor, num: int, sigma: float, generator=None) -> torch.Tensor:
    """
    Args:
        boxes: (G, 4) XYXY boxes.
        num: copies per box.
        sigma: standard deviation of the centre shift (in box widths / heights) and of the log-size change.
        generator: optional ``torch.Generator`` (default: the global RNG, seeded by ``cfg.SEED``).
    Returns:
        (G * num, 4) XYXY boxes, ``num`` consecutive rows per input box; not clipped.
    """
    if num <= 0 or boxes.numel() == 0:
        return boxes.new_zeros((0, 4))
    b = boxes.repeat_interleave(num, dim=0)
    w, h = (b[:, 2] - b[:, 0]).clamp(min=1e-3), (b[:, 3] - b[:, 1]).clamp(min=1e-3)
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    n = torch.randn((b.shape[0], 4), generator=generator, dtype=b.dtype, device=b.device) * sigma
    cx, cy = cx + n[:, 0] * w, cy + n[:, 1] * h
    w, h = w * n[:, 2].exp(), h * n[:, 3].exp()
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=1)


def add_jittered_gt_proposals(proposals: List[Instances], targets: List[Instances], num_per_gt: int,
                              sigma: float, generator=None) -> List[Instances]:
    """
    Append jittered copies of each image's ``gt_boxes`` to its proposals.

    Args:
        proposals: per image, Instances with ``proposal_boxes`` (R_i boxes) and ``objectness_logits`` (R_i,).
        targets: per image, Instances with ``gt_boxes`` (G_i boxes).
        num_per_gt, sigma: see :func:`jitter_boxes`; ``num_per_gt <= 0`` returns ``proposals`` unchanged.
    Returns:
        per image, Instances with R_i + (at most) G_i * num_per_gt proposals; boxes are clipped to the
        image and empty ones dropped. The new proposals get the ground-truth objectness logit.
    """
    if num_per_gt <= 0:
        return proposals
    out = []
    for props, tgt in zip(proposals, targets):
        boxes = Boxes(jitter_boxes(tgt.gt_boxes.tensor, num_per_gt, sigma, generator))
        boxes.clip(props.image_size)
        boxes = boxes[boxes.nonempty()]
        extra = Instances(props.image_size)
        extra.proposal_boxes = boxes.to(props.proposal_boxes.device)
        extra.objectness_logits = torch.full((len(boxes),), _GT_LOGIT, device=props.objectness_logits.device,
                                             dtype=props.objectness_logits.dtype)
        out.append(Instances.cat([props, extra]))
    return out


def gt_jitter_from_cfg(cfg) -> dict:
    """``MODEL.ROI_HEADS.GT_JITTER.*`` -> the keyword arguments of :class:`GTJitterMixin` (validated)."""
    c = cfg.MODEL.ROI_HEADS.GT_JITTER
    if int(c.NUM_PER_GT) < 0:
        raise ValueError(f"MODEL.ROI_HEADS.GT_JITTER.NUM_PER_GT must be >= 0, got {c.NUM_PER_GT}")
    if not float(c.SIGMA) > 0:
        raise ValueError(f"MODEL.ROI_HEADS.GT_JITTER.SIGMA must be > 0, got {c.SIGMA}")
    return {"gt_jitter_num": int(c.NUM_PER_GT), "gt_jitter_sigma": float(c.SIGMA)}


class GTJitterMixin:
    """Adds :func:`add_jittered_gt_proposals` in front of Detectron2's ``label_and_sample_proposals``
    (the first, RPN-fed, stage; Cascade R-CNN's later stages relabel their own boxes). Put it before a
    Detectron2 ``ROIHeads`` class in the bases; its ``from_config`` reads ``MODEL.ROI_HEADS.GT_JITTER``."""

    def __init__(self, *, gt_jitter_num: int = 0, gt_jitter_sigma: float = 0.2, **kwargs):
        super().__init__(**kwargs)
        self.gt_jitter_num = gt_jitter_num
        self.gt_jitter_sigma = gt_jitter_sigma

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret.update(gt_jitter_from_cfg(cfg))
        return ret

    @torch.no_grad()
    def label_and_sample_proposals(self, proposals: List[Instances], targets: List[Instances]):
        proposals = add_jittered_gt_proposals(proposals, targets, self.gt_jitter_num, self.gt_jitter_sigma)
        return super().label_and_sample_proposals(proposals, targets)
