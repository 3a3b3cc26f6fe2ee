"""defect_det's ROI heads: Detectron2's Standard / Cascade heads with one seam for box post-processing.

- :class:`DefectFastRCNNOutputLayers`: Detectron2's ``FastRCNNOutputLayers`` whose ``inference`` (and
  extra training losses) go through a box post-processor built from ``MODEL.ROI_HEADS.NMS_TYPE``
  (:mod:`.postprocess`: hard NMS, Sinkhorn NMS, or any registered one).
- :class:`DefectStandardROIHeads` / :class:`DefectCascadeROIHeads` (registered in ``ROI_HEADS_REGISTRY``):
  Detectron2's heads with that predictor; the cascade's final post-processing (averaged stage scores,
  last stage's boxes) is done by our own inference loop (:meth:`DefectCascadeROIHeads._forward_box`),
  which calls the same post-processor, with two hooks a subclass may override
  (:meth:`~DefectCascadeROIHeads._box_reference`, :meth:`~DefectCascadeROIHeads._stage_scores`; RDDN's
  TR-Post uses them). Both add jittered ground-truth proposals in training (``MODEL.ROI_HEADS.GT_JITTER``),
  containment suppression at inference (``MODEL.ROI_HEADS.CONTAIN_THRESH_TEST``), and hand the input
  images to a mask head that reads them (:class:`ImageInputsMixin`).

Another Detectron2 project uses them by importing ``defect_det``, calling ``add_defect_config(cfg)``
and setting ``MODEL.ROI_HEADS.NAME: "DefectStandardROIHeads"`` (or ``DefectCascadeROIHeads``) and
``MODEL.ROI_HEADS.NMS_TYPE`` ("hard" | "sinkhorn" | a registered post-processor).
"""
from typing import Dict, List, Optional, Tuple

import torch
from detectron2.config import configurable
from detectron2.modeling.roi_heads import (
    ROI_HEADS_REGISTRY,
    CascadeROIHeads,
    FastRCNNOutputLayers,
    StandardROIHeads,
    select_foreground_proposals,
)
from detectron2.structures import ImageList, Instances

from .containment import ContainmentMixin
from .postprocess import BoxPostProcessor, HardNMS, build_box_postprocessor
from .proposal_jitter import GTJitterMixin

__all__ = [
    "DefectFastRCNNOutputLayers",
    "DefectStandardROIHeads",
    "DefectCascadeROIHeads",
    "ImageInputsMixin",
    "PIXELS_KEY",
    "TEMPLATE_PIXELS_KEY",
    "TEMPLATE_PIXELS_VALID_KEY",
]

# Keys of the features dict under which a meta-architecture may pass the input images (pixel values
# 0..255, padded like the network input) and their templates to the ROI heads; see ImageInputsMixin.
PIXELS_KEY = "input:pixels"                      # (N, C, H, W)
TEMPLATE_PIXELS_KEY = "input:template_pixels"    # (N, C, H, W)
TEMPLATE_PIXELS_VALID_KEY = "input:template_valid"  # (N,) bool: which images really have a template


class DefectFastRCNNOutputLayers(FastRCNNOutputLayers):
    """``FastRCNNOutputLayers`` whose ``inference`` calls a box post-processor (module doc), and whose
    losses add the post-processor's training losses (e.g. end-to-end Sinkhorn NMS)."""

    @configurable
    def __init__(self, *args, postprocessor: Optional[BoxPostProcessor] = None, **kwargs):
        """
        Args (besides FastRCNNOutputLayers'):
            postprocessor: candidates -> detections (:mod:`.postprocess`); default: Detectron2's hard
                NMS at this layer's ``test_nms_thresh`` / ``test_topk_per_image``.
        """
        super().__init__(*args, **kwargs)
        self.postprocessor = postprocessor or HardNMS(nms_thresh=self.test_nms_thresh,
                                                      topk_per_image=self.test_topk_per_image)

    @classmethod
    def from_config(cls, cfg, input_shape, **kwargs):
        ret = super().from_config(cfg, input_shape)
        ret.update(kwargs)
        ret["postprocessor"] = build_box_postprocessor(cfg)
        return ret

    def losses(self, predictions, proposals):
        """Detectron2's losses, plus those of the post-processor (none for hard NMS)."""
        losses = super().losses(predictions, proposals)
        if self.postprocessor.has_losses:
            boxes = self.predict_boxes(predictions, proposals)
            probs = self.predict_probs(predictions, proposals)
            losses.update(self.postprocessor.losses(boxes, probs, proposals, self.num_classes,
                                                    self.test_score_thresh))
        return losses

    def postprocess(self, boxes: List[torch.Tensor], scores: List[torch.Tensor],
                    image_shapes: List[Tuple[int, int]], score_thresh: Optional[float] = None):
        """The post-processor on per-image boxes (R_i, K*4) and probabilities (R_i, K+1);
        ``score_thresh`` defaults to ``test_score_thresh``. Returns ``(instances, kept indices)``."""
        thresh = self.test_score_thresh if score_thresh is None else score_thresh
        return self.postprocessor(boxes, scores, image_shapes, thresh)

    def inference(self, predictions, proposals):
        boxes = self.predict_boxes(predictions, proposals)
        scores = self.predict_probs(predictions, proposals)
        return self.postprocess(boxes, scores, [x.image_size for x in proposals])


class ImageInputsMixin:
    """Gives a mask head that reads the input images (``needs_images``, e.g. ``BoxSupervisedMaskHead``)
    the images as arguments: ``mask_head(features, instances, images=, templates=, template_valid=)``.

    The images are those a meta-architecture put in the features dict (:data:`PIXELS_KEY`, and
    templates under :data:`TEMPLATE_PIXELS_KEY` / :data:`TEMPLATE_PIXELS_VALID_KEY`; ``TemplateRCNN``
    does, since its network input may be a difference image); otherwise (e.g. Detectron2's
    ``GeneralizedRCNN``) they are recovered from the normalised network input as
    ``images * PIXEL_STD + PIXEL_MEAN``, without templates. Put it before a Detectron2 ``ROIHeads``
    class in the bases."""

    def __init__(self, *, pixel_mean: Optional[Tuple[float, ...]] = None,
                 pixel_std: Optional[Tuple[float, ...]] = None, **kwargs):
        """pixel_mean, pixel_std: ``MODEL.PIXEL_MEAN`` / ``PIXEL_STD`` of the network input (needed only
        when a mask head reads images and the meta-architecture does not pass them)."""
        super().__init__(**kwargs)
        # not buffers: they are not parameters of the model and must not enter its checkpoints
        self._pixel_mean = None if pixel_mean is None else tuple(float(x) for x in pixel_mean)
        self._pixel_std = None if pixel_std is None else tuple(float(x) for x in pixel_std)

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret.update(pixel_mean=tuple(cfg.MODEL.PIXEL_MEAN), pixel_std=tuple(cfg.MODEL.PIXEL_STD))
        return ret

    def _mask_reads_images(self) -> bool:
        return bool(self.mask_on and getattr(self.mask_head, "needs_images", False))

    def forward(self, images: ImageList, features: Dict[str, torch.Tensor], proposals, targets=None):
        if self._mask_reads_images() and PIXELS_KEY not in features:
            if self._pixel_mean is None or self._pixel_std is None:
                raise ValueError(f"{type(self).__name__}: the mask head reads the input images; give pixel_mean "
                                 "and pixel_std (MODEL.PIXEL_MEAN / PIXEL_STD) to recover them from the network input")
            x = images.tensor
            mean = x.new_tensor(self._pixel_mean).view(-1, 1, 1)
            std = x.new_tensor(self._pixel_std).view(-1, 1, 1)
            features = dict(features)
            features[PIXELS_KEY] = x * std + mean
        return super().forward(images, features, proposals, targets)

    def _forward_mask(self, features: Dict[str, torch.Tensor], instances: List[Instances]):
        if not self._mask_reads_images():
            return super()._forward_mask(features, instances)
        if self.training:
            instances, _ = select_foreground_proposals(instances, self.num_classes)
        boxes = [x.proposal_boxes if self.training else x.pred_boxes for x in instances]
        if self.mask_pooler is not None:
            mask_features = self.mask_pooler([features[f] for f in self.mask_in_features], boxes)
        else:
            mask_features = {f: features[f] for f in self.mask_in_features}
        if PIXELS_KEY not in features:
            raise ValueError(f"{type(self.mask_head).__name__} reads the input images, but the features dict "
                             f"has no {PIXELS_KEY!r} (call the ROI heads' forward, which adds it)")
        return self.mask_head(mask_features, instances, images=features[PIXELS_KEY],
                              templates=features.get(TEMPLATE_PIXELS_KEY),
                              template_valid=features.get(TEMPLATE_PIXELS_VALID_KEY))


@ROI_HEADS_REGISTRY.register()
class DefectStandardROIHeads(ContainmentMixin, GTJitterMixin, ImageInputsMixin, StandardROIHeads):
    """``StandardROIHeads`` with :class:`DefectFastRCNNOutputLayers` (post-processing by ``NMS_TYPE``) and,
    in training, jittered ground-truth proposals (``MODEL.ROI_HEADS.GT_JITTER``, off by default); at
    inference, containment suppression (``MODEL.ROI_HEADS.CONTAIN_THRESH_TEST``, off by default)."""

    @configurable
    def __init__(self, **kwargs):
        super().__init__(**kwargs)

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        ret = super()._init_box_head(cfg, input_shape)
        ret["box_predictor"] = DefectFastRCNNOutputLayers(cfg, ret["box_head"].output_shape)
        return ret


@ROI_HEADS_REGISTRY.register()
class DefectCascadeROIHeads(ContainmentMixin, GTJitterMixin, ImageInputsMixin, CascadeROIHeads):
    """``CascadeROIHeads`` whose stages use :class:`DefectFastRCNNOutputLayers` and whose final
    post-processing is the last predictor's post-processor; jittered ground-truth proposals for the
    first stage in training and containment suppression at inference (both off by default)."""

    @configurable
    def __init__(self, **kwargs):
        super().__init__(**kwargs)

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        ret = super()._init_box_head(cfg, input_shape)
        predictors = []
        for head, p in zip(ret["box_heads"], ret["box_predictors"]):
            ours = DefectFastRCNNOutputLayers(cfg, head.output_shape, box2box_transform=p.box2box_transform)
            ours.load_state_dict(p.state_dict())  # Detectron2's initialisation, same layers
            predictors.append(ours)
        ret["box_predictors"] = predictors
        return ret

    # ------------------------------------------------------------------ hooks for subclasses
    def _box_reference(self, features: Dict[str, torch.Tensor]):
        """Anything the inference loop should hand to :meth:`_stage_scores` (None here; RDDN: the
        template features of TR-Post)."""
        return None

    def _stage_scores(self, stage: int, box_features: List[torch.Tensor], proposals: List[Instances],
                      predictions, reference) -> Tuple[Tuple[torch.Tensor, ...], float]:
        """Class probabilities (R_i, K + 1) per image of one stage, and the score threshold the final
        post-processing must use with them (Detectron2: the predictor's own probabilities and
        ``test_score_thresh``)."""
        predictor = self.box_predictor[stage]
        return predictor.predict_probs(predictions, proposals), predictor.test_score_thresh

    # ------------------------------------------------------------------ inference
    def _forward_box(self, features, proposals, targets=None):
        """Training: Detectron2's. Inference: the stages in turn (each refines the previous stage's
        boxes), class probabilities averaged over the stages, the last stage's boxes, then the
        post-processor — Detectron2's cascade inference with the post-processing step made pluggable."""
        if self.training:
            return super()._forward_box(features, proposals, targets)
        reference = self._box_reference(features)
        box_features = [features[f] for f in self.box_in_features]
        image_sizes = [x.image_size for x in proposals]
        stage_scores, boxes, thresh = [], None, None
        for k in range(self.num_cascade_stages):
            if k > 0:
                proposals = self._create_proposals_from_boxes(boxes, image_sizes)
            predictions = self._run_stage(box_features, proposals, k)
            boxes = self.box_predictor[k].predict_boxes(predictions, proposals)
            scores, thresh = self._stage_scores(k, box_features, proposals, predictions, reference)
            stage_scores.append(scores)
        scores = [sum(per_image) * (1.0 / self.num_cascade_stages) for per_image in zip(*stage_scores)]
        instances, _ = self.box_predictor[-1].postprocess(boxes, scores, image_sizes, thresh)
        return instances
