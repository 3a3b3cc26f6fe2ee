"""ROI heads with RDDN's region-level references: context reference (CR) and TR-Post.

- **Context reference** (paper section IV-C): for every region r = (x, y, w, h) the concentric box
  r_c = (x, y, k*w, k*h), clipped to the image, is pooled too, and the two ROI features are
  concatenated along channels before the box head (so classification and regression see both).
  ``MODEL.ROI_BOX_HEAD.CONTEXT_SCALE`` is k (1.0 = off); ``CONTEXT_ONLY`` pools only r_c (the
  paper's CR* ablation). Implemented by :class:`ContextROIPooler`, which wraps Detectron2's
  ``ROIPooler``; the box head(s) are built for the doubled channel count.
- **TR-Post** (section IV-A3, eq. 10): at inference, if the backbone features of the templates are
  in the features dict (keys ``"template:" + name``, see :func:`split_template_features`), the
  box-head features F^I and F^T of every proposal on the image and the template give
  ``cos(F^I, F^T)``; it is stored on the proposals as ``template_similarity`` and
  :class:`~defect_det.modeling.roi_heads.DefectFastRCNNOutputLayers` multiplies the foreground
  probabilities by ``1 - cos``. Needs no retraining. ``ROI_HEADS.SCORE_THRESH_TEST`` then bounds
  the classifier's own probability (entries below it are dropped); the rescored values rank the
  rest (the product would otherwise fall below the threshold wherever cos is near 1).

Registered as ``RDDNStandardROIHeads`` and ``RDDNCascadeROIHeads``; they inherit the
``NMS_TYPE`` ("hard" | "sinkhorn") choice of :class:`DefectStandardROIHeads` /
:class:`DefectCascadeROIHeads`.
"""
import contextlib
from typing import Dict, List, Optional, Tuple

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, build_box_head
from detectron2.structures import Boxes
from torch import nn

from .sinkhorn_heads import DefectCascadeROIHeads, DefectFastRCNNOutputLayers, DefectStandardROIHeads

__all__ = [
    "TEMPLATE_PREFIX",
    "TEMPLATE_VALID_KEY",
    "ContextROIPooler",
    "RDDNCascadeROIHeads",
    "RDDNStandardROIHeads",
    "context_boxes",
    "region_similarity",
    "split_template_features",
]

TEMPLATE_PREFIX = "template:"
TEMPLATE_VALID_KEY = "template:valid"  # (N,) bool: which images of the batch have a template


def context_boxes(boxes: torch.Tensor, image_size: Tuple[int, int], scale: float) -> torch.Tensor:
    """
    Concentric context boxes.

    Args:
        boxes: (R, 4) XYXY absolute.
        image_size: (height, width) of the image the boxes live in.
        scale: k >= 1; width and height are multiplied by k about the box centre.
    Returns:
        (R, 4) XYXY boxes, clipped to [0, width] x [0, height].
    """
    cx = (boxes[:, 0] + boxes[:, 2]) * 0.5
    cy = (boxes[:, 1] + boxes[:, 3]) * 0.5
    hw = (boxes[:, 2] - boxes[:, 0]) * (0.5 * scale)
    hh = (boxes[:, 3] - boxes[:, 1]) * (0.5 * scale)
    h, w = image_size
    return torch.stack(
        [(cx - hw).clamp(0, w), (cy - hh).clamp(0, h), (cx + hw).clamp(0, w), (cy + hh).clamp(0, h)], dim=1
    )


class ContextROIPooler(nn.Module):
    """
    Wraps a Detectron2 ``ROIPooler``: pools each box and its context box (see module doc).

    Output: (R, C_out, S, S) with C_out = 2C (region ++ context), C (scale 1: region only) or
    C (``context_only``). Clipping needs the image sizes of the batch: the owning ROI heads set
    them around each use with :meth:`images`.
    """

    def __init__(self, pooler: nn.Module, scale: float = 1.5, context_only: bool = False):
        super().__init__()
        if scale < 1.0:
            raise ValueError(f"MODEL.ROI_BOX_HEAD.CONTEXT_SCALE must be >= 1 (1 = off), got {scale}")
        if context_only and scale == 1.0:
            raise ValueError("MODEL.ROI_BOX_HEAD.CONTEXT_ONLY needs CONTEXT_SCALE > 1")
        self.pooler = pooler
        self.scale = float(scale)
        self.context_only = context_only
        self._image_sizes: Optional[List[Tuple[int, int]]] = None

    @property
    def enabled(self) -> bool:
        return self.scale != 1.0

    def channel_factor(self) -> int:
        """Output channels / input channels."""
        return 2 if self.enabled and not self.context_only else 1

    @contextlib.contextmanager
    def images(self, image_sizes: List[Tuple[int, int]]):
        """Within the block, box lists are clipped to these (height, width), one per image."""
        previous = self._image_sizes
        self._image_sizes = list(image_sizes)
        try:
            yield self
        finally:
            self._image_sizes = previous

    def forward(self, x: List[torch.Tensor], box_lists: List[Boxes]) -> torch.Tensor:
        """x: per-level (N, C, H_l, W_l); box_lists: N ``Boxes`` -> (R, C_out, S, S)."""
        if not self.enabled:
            return self.pooler(x, box_lists)
        if self._image_sizes is None or len(self._image_sizes) != len(box_lists):
            raise RuntimeError(
                "ContextROIPooler needs the image sizes of the batch: call it inside "
                "`with pooler.images(image_sizes):` (the RDDN ROI heads do)"
            )
        ctx = [Boxes(context_boxes(b.tensor, s, self.scale)) for b, s in zip(box_lists, self._image_sizes)]
        context = self.pooler(x, ctx)
        if self.context_only:
            return context
        return torch.cat([self.pooler(x, box_lists), context], dim=1)


def region_similarity(f_image: torch.Tensor, f_template: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """
    cos(F^I, F^T) per row of (R, D) features (eq. 11). Two all-zero rows (nothing fires on either
    image) count as identical (1); one all-zero row against a non-zero one as 0.
    Returns (R,) in [-1, 1] ([0, 1] for the ReLU features of the box head).
    """
    ni, nt = f_image.norm(dim=1), f_template.norm(dim=1)
    cos = (f_image * f_template).sum(dim=1) / (ni * nt).clamp_min(eps)
    both_zero = (ni <= eps) & (nt <= eps)
    return torch.where(both_zero, torch.ones_like(cos), cos)


def split_template_features(features: Dict[str, torch.Tensor], in_features: List[str]):
    """(template feature list for ``in_features`` or None, (N,) validity mask or None)."""
    keys = [TEMPLATE_PREFIX + f for f in in_features]
    if not all(k in features for k in keys):
        return None, None
    return [features[k] for k in keys], features.get(TEMPLATE_VALID_KEY)


class _ReferenceMixin:
    """Shared parts of the two registered heads: context pooler / box-head construction and the
    TR-Post similarity. Expects ``self.box_pooler`` and ``self.box_in_features``."""

    supports_template_post = True

    @staticmethod
    def _context_parts(cfg, input_shape, ret):
        """Wrap ``ret["box_pooler"]`` and return the pooled ShapeSpec the box heads must take."""
        c = cfg.MODEL.ROI_BOX_HEAD
        pooler = ContextROIPooler(ret["box_pooler"], c.CONTEXT_SCALE, c.CONTEXT_ONLY)
        ret["box_pooler"] = pooler
        channels = input_shape[cfg.MODEL.ROI_HEADS.IN_FEATURES[0]].channels * pooler.channel_factor()
        r = c.POOLER_RESOLUTION
        return ShapeSpec(channels=channels, height=r, width=r)

    @contextlib.contextmanager
    def _post_scoring(self, predictors):
        """While TR-Post rescoring is active, each predictor thresholds the raw probability
        (``raw_score_thresh``) and keeps every rescored entry > 0 (``test_score_thresh`` = 0)."""
        saved = [p.test_score_thresh for p in predictors]
        for p, t in zip(predictors, saved):
            p.raw_score_thresh, p.test_score_thresh = t, 0.0
        try:
            yield
        finally:
            for p, t in zip(predictors, saved):
                p.test_score_thresh = t
                del p.raw_score_thresh

    def _attach_template_similarity(self, box_head, features, template_features, valid, proposals):
        """Set ``template_similarity`` (R_i,) on every proposals Instances (0 where no template)."""
        boxes = [p.proposal_boxes for p in proposals]
        sizes = [p.image_size for p in proposals]
        n = sum(len(b) for b in boxes)
        # one pooler call over the 2N-image batch [images; templates]: its output lists the boxes
        # image by image, so rows [0, n) are image regions and [n, 2n) the same regions on templates
        with self.box_pooler.images(sizes + sizes):
            pooled = self.box_pooler([torch.cat([a, b], 0) for a, b in zip(features, template_features)],
                                     boxes + boxes)
        f = box_head(pooled)
        sim = region_similarity(f[:n].flatten(1), f[n:].flatten(1))
        for i, (p, s) in enumerate(zip(proposals, sim.split([len(b) for b in boxes]))):
            ok = True if valid is None else bool(valid[i])
            p.template_similarity = s if ok else torch.zeros_like(s)


@ROI_HEADS_REGISTRY.register()
class RDDNStandardROIHeads(_ReferenceMixin, DefectStandardROIHeads):
    """``StandardROIHeads`` (+ ``NMS_TYPE``) with context reference and TR-Post; see module doc."""

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        ret = super()._init_box_head(cfg, input_shape)
        pooled = cls._context_parts(cfg, input_shape, ret)
        ret["box_head"] = build_box_head(cfg, pooled)
        ret["box_predictor"] = DefectFastRCNNOutputLayers(cfg, ret["box_head"].output_shape)
        return ret

    def _forward_box(self, features: Dict[str, torch.Tensor], proposals):
        with self.box_pooler.images([p.image_size for p in proposals]):
            tmpl, valid = (None, None) if self.training else split_template_features(features, self.box_in_features)
            if tmpl is None:
                return super()._forward_box(features, proposals)
            feats = [features[f] for f in self.box_in_features]
            self._attach_template_similarity(self.box_head, feats, tmpl, valid, proposals)
            with self._post_scoring([self.box_predictor]):
                return super()._forward_box(features, proposals)


@ROI_HEADS_REGISTRY.register()
class RDDNCascadeROIHeads(_ReferenceMixin, DefectCascadeROIHeads):
    """``CascadeROIHeads`` (+ ``NMS_TYPE``) with context reference and TR-Post; see module doc.
    TR-Post rescoring applies to every stage's probabilities (Cascade R-CNN averages them)."""

    @configurable
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._template_scope = None

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        ret = super()._init_box_head(cfg, input_shape)
        pooled = cls._context_parts(cfg, input_shape, ret)
        heads, predictors = [], []
        for w in cfg.MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS:
            head = build_box_head(cfg, pooled)
            heads.append(head)
            predictors.append(DefectFastRCNNOutputLayers(
                cfg, head.output_shape, box2box_transform=Box2BoxTransform(weights=w)))
        ret["box_heads"], ret["box_predictors"] = heads, predictors
        return ret

    def _forward_box(self, features, proposals, targets=None):
        scope = None
        if not self.training:
            tmpl, valid = split_template_features(features, self.box_in_features)
            if tmpl is not None:
                scope = (tmpl, valid)
        self._template_scope = scope
        scoring = self._post_scoring(self.box_predictor) if scope else contextlib.nullcontext()
        try:
            with self.box_pooler.images([p.image_size for p in proposals]), scoring:
                return super()._forward_box(features, proposals, targets)
        finally:
            self._template_scope = None

    def _run_stage(self, features, proposals, stage):
        if self._template_scope is not None:
            tmpl, valid = self._template_scope
            self._attach_template_similarity(self.box_head[stage], features, tmpl, valid, proposals)
        return super()._run_stage(features, proposals, stage)
