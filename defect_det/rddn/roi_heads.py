"""RDDN's ROI heads: region-level references on defect_det's shared heads.

- **Context reference** (:mod:`.context`): the box pooler is a :class:`ContextROIPooler` and the box
  head(s) are built for its channel count.
- **TR-Post** (:mod:`.template_post`): at inference, when the template's features are in the features
  dict, every proposal's class probabilities are rescored by its template similarity before the box
  post-processing — RDDN's own step, ahead of the post-processor of ``MODEL.ROI_HEADS.NMS_TYPE``.

Registered as ``RDDNStandardROIHeads`` and ``RDDNCascadeROIHeads``; built on
:class:`~defect_det.modeling.roi_heads.DefectStandardROIHeads` / ``DefectCascadeROIHeads``, so the box
post-processor (hard / Sinkhorn NMS), jittered proposals, containment and image-reading mask heads
work with them unchanged.
"""
from typing import Dict, List, Optional, Tuple

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, build_box_head
from detectron2.structures import Boxes, Instances

from ..modeling.roi_heads.heads import DefectCascadeROIHeads, DefectFastRCNNOutputLayers, DefectStandardROIHeads
from .context import ContextROIPooler
from .template_post import region_similarity, rescore_by_template, split_template_features

__all__ = ["RDDNCascadeROIHeads", "RDDNStandardROIHeads"]


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; gradient times ``scale`` backward (Cascade R-CNN's stage-loss scaling)."""

    @staticmethod
    def forward(ctx, x, scale: float):
        ctx.scale = scale
        return x

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


class _ReferenceMixin:
    """Shared parts of the two registered heads: context pooler / box-head construction and the
    TR-Post similarity. Expects ``self.box_pooler`` and ``self.box_in_features``."""

    supports_template_post = True

    @staticmethod
    def _context_parts(cfg, input_shape, ret) -> ShapeSpec:
        """Wrap ``ret["box_pooler"]`` and return the pooled ShapeSpec the box heads must take."""
        c = cfg.MODEL.ROI_BOX_HEAD
        pooler = ContextROIPooler(ret["box_pooler"], c.CONTEXT_SCALE, c.CONTEXT_ONLY)
        ret["box_pooler"] = pooler
        channels = input_shape[cfg.MODEL.ROI_HEADS.IN_FEATURES[0]].channels * pooler.channel_factor()
        r = c.POOLER_RESOLUTION
        return ShapeSpec(channels=channels, height=r, width=r)

    def _pool(self, features: List[torch.Tensor], proposals: List[Instances]) -> torch.Tensor:
        """(R, C_out, S, S) pooled features of the proposals (regions and their context)."""
        return self.box_pooler(features, [p.proposal_boxes for p in proposals], [p.image_size for p in proposals])

    def _template_similarity(self, box_head, features: List[torch.Tensor], template_features: List[torch.Tensor],
                             valid: Optional[torch.Tensor], proposals: List[Instances]) -> List[torch.Tensor]:
        """Per image (R_i,) cos of the box-head features of each proposal on image and template (eq. 11);
        0 for images without a template (their probabilities are left unchanged)."""
        boxes = [p.proposal_boxes for p in proposals]
        sizes = [p.image_size for p in proposals]
        n = sum(len(b) for b in boxes)
        # one pooler call over the 2N-image batch [images; templates]: its output lists the boxes
        # image by image, so rows [0, n) are image regions and [n, 2n) the same regions on templates
        pooled = self.box_pooler([torch.cat([a, b], 0) for a, b in zip(features, template_features)],
                                 boxes + boxes, sizes + sizes)
        f = box_head(pooled)
        sim = region_similarity(f[:n].flatten(1), f[n:].flatten(1))
        out = []
        for i, s in enumerate(sim.split([len(b) for b in boxes])):
            ok = True if valid is None else bool(valid[i])
            out.append(s if ok else torch.zeros_like(s))
        return out


@ROI_HEADS_REGISTRY.register()
class RDDNStandardROIHeads(_ReferenceMixin, DefectStandardROIHeads):
    """``DefectStandardROIHeads`` with context reference and TR-Post (module doc)."""

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        ret = super()._init_box_head(cfg, input_shape)
        pooled = cls._context_parts(cfg, input_shape, ret)
        ret["box_head"] = build_box_head(cfg, pooled)
        ret["box_predictor"] = DefectFastRCNNOutputLayers(cfg, ret["box_head"].output_shape)
        return ret

    def _forward_box(self, features: Dict[str, torch.Tensor], proposals: List[Instances]):
        """Detectron2's box branch with the context pooler; at inference TR-Post (when the template
        features are present) between the classifier and the post-processor."""
        box_in = [features[f] for f in self.box_in_features]
        predictions = self.box_predictor(self.box_head(self._pool(box_in, proposals)))
        if self.training:
            losses = self.box_predictor.losses(predictions, proposals)
            if self.train_on_pred_boxes:  # as Detectron2: later heads see the regressed boxes
                with torch.no_grad():
                    pred = self.box_predictor.predict_boxes_for_gt_classes(predictions, proposals)
                    for p, b in zip(proposals, pred):
                        p.proposal_boxes = Boxes(b)
            return losses
        probs = self.box_predictor.predict_probs(predictions, proposals)
        thresh = self.box_predictor.test_score_thresh
        tmpl, valid = split_template_features(features, self.box_in_features)
        if tmpl is not None:
            sim = self._template_similarity(self.box_head, box_in, tmpl, valid, proposals)
            probs, thresh = rescore_by_template(probs, sim, thresh), 0.0
        boxes = self.box_predictor.predict_boxes(predictions, proposals)
        instances, _ = self.box_predictor.postprocess(boxes, probs, [p.image_size for p in proposals], thresh)
        return instances


@ROI_HEADS_REGISTRY.register()
class RDDNCascadeROIHeads(_ReferenceMixin, DefectCascadeROIHeads):
    """``DefectCascadeROIHeads`` with context reference and TR-Post (module doc). TR-Post rescores every
    stage's probabilities with that stage's box head before Cascade R-CNN averages them."""

    @configurable
    def __init__(self, **kwargs):
        super().__init__(**kwargs)

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

    def _run_stage(self, features: List[torch.Tensor], proposals: List[Instances], stage: int):
        """Detectron2's stage with the context pooler (which needs the image sizes)."""
        box_features = self._pool(features, proposals)
        if self.training:  # the stages' losses add up; their gradient on the features is averaged
            box_features = _ScaleGradient.apply(box_features, 1.0 / self.num_cascade_stages)
        return self.box_predictor[stage](self.box_head[stage](box_features))

    def _box_reference(self, features: Dict[str, torch.Tensor]):
        tmpl, valid = split_template_features(features, self.box_in_features)
        return None if tmpl is None else (tmpl, valid)

    def _stage_scores(self, stage, box_features, proposals, predictions, reference) -> Tuple[tuple, float]:
        probs, thresh = super()._stage_scores(stage, box_features, proposals, predictions, reference)
        if reference is None:
            return probs, thresh
        tmpl, valid = reference
        sim = self._template_similarity(self.box_head[stage], box_features, tmpl, valid, proposals)
        return rescore_by_template(probs, sim, thresh), 0.0
