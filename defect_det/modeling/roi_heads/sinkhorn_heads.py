"""ROI heads whose box post-processing is chosen by ``MODEL.ROI_HEADS.NMS_TYPE`` ("hard" | "sinkhorn").

- :class:`DefectFastRCNNOutputLayers`: Detectron2's ``FastRCNNOutputLayers`` with ``inference``
  dispatching to hard NMS (Detectron2's own code path, unchanged) or Sinkhorn NMS.
- :class:`DefectStandardROIHeads` / :class:`DefectCascadeROIHeads` (registered in
  ``ROI_HEADS_REGISTRY``): Detectron2's heads with that predictor. Cascade R-CNN calls the module
  function ``fast_rcnn_inference`` on the stage-averaged scores inside ``_forward_box``; at inference
  with NMS_TYPE "sinkhorn" that one name is swapped for the duration of the call.

Another Detectron2 project uses them by importing ``defect_det``, calling ``add_defect_config(cfg)``
and setting ``MODEL.ROI_HEADS.NAME: "DefectStandardROIHeads"`` (or ``DefectCascadeROIHeads``) and
``MODEL.ROI_HEADS.NMS_TYPE: "sinkhorn"``.
"""
import contextlib
import functools

import torch

from detectron2.config import configurable
from detectron2.modeling.roi_heads import (
    ROI_HEADS_REGISTRY,
    CascadeROIHeads,
    FastRCNNOutputLayers,
    StandardROIHeads,
)
from detectron2.modeling.roi_heads import cascade_rcnn as d2_cascade

from ...layers.sinkhorn_nms import SinkhornNMSParams
from .containment import ContainmentMixin
from .proposal_jitter import GTJitterMixin
from .sinkhorn_inference import sinkhorn_fast_rcnn_inference
from .sinkhorn_loss import sinkhorn_nms_matching_loss

__all__ = [
    "DefectFastRCNNOutputLayers",
    "DefectStandardROIHeads",
    "DefectCascadeROIHeads",
    "sinkhorn_nms_params_from_cfg",
    "nms_type_from_cfg",
]

NMS_TYPES = ("hard", "sinkhorn")


def nms_type_from_cfg(cfg) -> str:
    t = cfg.MODEL.ROI_HEADS.get("NMS_TYPE", "hard")
    if t not in NMS_TYPES:
        raise ValueError(f"MODEL.ROI_HEADS.NMS_TYPE must be one of {NMS_TYPES}, got {t!r}")
    return t


def sinkhorn_nms_params_from_cfg(cfg) -> SinkhornNMSParams:
    """``MODEL.SINKHORN_NMS.*`` -> :class:`SinkhornNMSParams` (validated, errors name the key)."""
    c = cfg.MODEL.SINKHORN_NMS
    p = SinkhornNMSParams(
        alpha=c.ALPHA, beta=c.BETA, gamma=c.GAMMA, tau=c.TAU, spatial=c.SPATIAL,
        dustbin_cost=c.DUSTBIN_COST, seed_iou=cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST,
        max_regions=c.MAX_REGIONS, refine_iters=c.REFINE_ITERS, sinkhorn_iters=c.SINKHORN_ITERS,
        score_power=c.SCORE_POWER,
    )
    try:
        return p.check()
    except ValueError as e:
        raise ValueError(f"MODEL.SINKHORN_NMS: {e}") from None


class DefectFastRCNNOutputLayers(FastRCNNOutputLayers):
    """``FastRCNNOutputLayers`` whose ``inference`` uses hard or Sinkhorn NMS (``nms_type``)."""

    @configurable
    def __init__(self, *args, nms_type: str = "hard", sinkhorn_params: SinkhornNMSParams = None,
                 e2e_loss_weight: float = 0.0, e2e_topk: int = 300, **kwargs):
        """
        Args (besides FastRCNNOutputLayers'):
            nms_type: "hard" | "sinkhorn" post-processing at inference.
            sinkhorn_params: :class:`SinkhornNMSParams`.
            e2e_loss_weight: weight of the loss computed after Sinkhorn NMS in training (0 = off).
            e2e_topk: candidates per image entering that loss.
        """
        super().__init__(*args, **kwargs)
        if nms_type not in NMS_TYPES:
            raise ValueError(f"nms_type must be one of {NMS_TYPES}, got {nms_type!r}")
        self.nms_type = nms_type
        self.sinkhorn_params = sinkhorn_params or SinkhornNMSParams()
        self.e2e_loss_weight = e2e_loss_weight
        self.e2e_topk = e2e_topk

    @classmethod
    def from_config(cls, cfg, input_shape, **kwargs):
        ret = super().from_config(cfg, input_shape)
        ret.update(kwargs)
        ret["nms_type"] = nms_type_from_cfg(cfg)
        ret["sinkhorn_params"] = sinkhorn_nms_params_from_cfg(cfg)
        ret["e2e_loss_weight"] = cfg.MODEL.SINKHORN_NMS.E2E_LOSS_WEIGHT
        ret["e2e_topk"] = cfg.MODEL.SINKHORN_NMS.E2E_TOPK
        return ret

    def losses(self, predictions, proposals):
        """Detectron2's losses, plus ``loss_sinkhorn_nms`` (see ``sinkhorn_loss.py``) when
        ``e2e_loss_weight > 0``. The image's ground truths are the distinct matched GT boxes of the
        foreground proposals (Detectron2 appends every GT box to the proposals in training)."""
        losses = super().losses(predictions, proposals)
        if self.e2e_loss_weight <= 0:
            return losses
        boxes = self.predict_boxes(predictions, proposals)
        probs = self.predict_probs(predictions, proposals)
        gt_boxes, gt_classes = [], []
        for p in proposals:
            fg = (p.gt_classes >= 0) & (p.gt_classes < self.num_classes) if p.has("gt_classes") else None
            if fg is None or not fg.any():
                gt_boxes.append(probs[0].new_zeros(0, 4))
                gt_classes.append(torch.zeros(0, dtype=torch.long, device=probs[0].device))
                continue
            rows = torch.cat([p.gt_boxes.tensor[fg], p.gt_classes[fg, None].to(p.gt_boxes.tensor.dtype)], 1)
            rows = torch.unique(rows, dim=0)
            gt_boxes.append(rows[:, :4])
            gt_classes.append(rows[:, 4].long())
        loss = sinkhorn_nms_matching_loss(
            boxes, probs, gt_boxes, gt_classes, [p.image_size for p in proposals], self.sinkhorn_params,
            score_thresh=self.test_score_thresh, topk=self.e2e_topk,
        )
        losses["loss_sinkhorn_nms"] = self.e2e_loss_weight * loss
        return losses

    def predict_probs(self, predictions, proposals):
        """Detectron2's class probabilities (R_i, K + 1) per image; where the proposals carry
        ``template_similarity`` (TR-Post, set by the RDDN ROI heads at inference), the foreground
        columns are multiplied by ``1 - similarity`` (RDDN eq. 10)."""
        probs = super().predict_probs(predictions, proposals)
        if not proposals or not proposals[0].has("template_similarity"):
            return probs
        # The score threshold keeps its meaning (a bound on the classifier's probability): entries
        # at or below ``raw_score_thresh`` become 0, the rest are rescored. The RDDN heads lower
        # ``test_score_thresh`` to 0 meanwhile, so rescored entries are ranked, not cut, by it.
        thresh = getattr(self, "raw_score_thresh", self.test_score_thresh)
        out = []
        for p, pr in zip(probs, proposals):
            factor = (1.0 - pr.template_similarity).clamp(0.0, 1.0).to(p.dtype)
            fg = p[:, :-1]
            fg = torch.where(fg > thresh, fg * factor[:, None], torch.zeros_like(fg))
            out.append(torch.cat([fg, p[:, -1:]], dim=1))
        return tuple(out)

    def inference(self, predictions, proposals):
        if self.nms_type == "hard":
            return super().inference(predictions, proposals)
        boxes = self.predict_boxes(predictions, proposals)
        scores = self.predict_probs(predictions, proposals)
        image_shapes = [x.image_size for x in proposals]
        return sinkhorn_fast_rcnn_inference(
            boxes, scores, image_shapes, self.test_score_thresh, self.test_nms_thresh,
            self.test_topk_per_image, self.sinkhorn_params,
        )


@ROI_HEADS_REGISTRY.register()
class DefectStandardROIHeads(ContainmentMixin, GTJitterMixin, StandardROIHeads):
    """``StandardROIHeads`` with :class:`DefectFastRCNNOutputLayers` (NMS by ``NMS_TYPE``) and, in
    training, jittered ground-truth proposals (``MODEL.ROI_HEADS.GT_JITTER``, off by default); at
    inference, containment suppression (``MODEL.ROI_HEADS.CONTAIN_THRESH_TEST``, off by default)."""

    @configurable
    def __init__(self, **kwargs):
        super().__init__(**kwargs)

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        ret = super()._init_box_head(cfg, input_shape)
        ret["box_predictor"] = DefectFastRCNNOutputLayers(cfg, ret["box_head"].output_shape)
        return ret


@contextlib.contextmanager
def _cascade_inference_fn(fn):
    original = d2_cascade.fast_rcnn_inference
    d2_cascade.fast_rcnn_inference = fn
    try:
        yield
    finally:
        d2_cascade.fast_rcnn_inference = original


@ROI_HEADS_REGISTRY.register()
class DefectCascadeROIHeads(ContainmentMixin, GTJitterMixin, CascadeROIHeads):
    """``CascadeROIHeads`` whose final post-processing follows ``NMS_TYPE``; jittered ground-truth
    proposals for the first stage in training (``MODEL.ROI_HEADS.GT_JITTER``) and containment suppression
    at inference (``MODEL.ROI_HEADS.CONTAIN_THRESH_TEST``), both off by default."""

    @configurable
    def __init__(self, *, nms_type: str = "hard", sinkhorn_params: SinkhornNMSParams = None, **kwargs):
        super().__init__(**kwargs)
        self.nms_type = nms_type
        self.sinkhorn_params = sinkhorn_params or SinkhornNMSParams()

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret["nms_type"] = nms_type_from_cfg(cfg)
        ret["sinkhorn_params"] = sinkhorn_nms_params_from_cfg(cfg)
        return ret

    def _forward_box(self, features, proposals, targets=None):
        if self.training or self.nms_type == "hard":
            return super()._forward_box(features, proposals, targets)
        fn = functools.partial(sinkhorn_fast_rcnn_inference, params=self.sinkhorn_params)
        with _cascade_inference_fn(fn):
            return super()._forward_box(features, proposals, targets)
