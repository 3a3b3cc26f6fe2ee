"""Box post-processing of the ROI heads as a pluggable step (issue 13).

Every box head of defect_det (``DefectStandardROIHeads``, ``DefectCascadeROIHeads`` and the RDDN heads
built on them) turns its per-proposal boxes and class probabilities into detections through ONE call
of a post-processor held by its box predictor, built from the config by :func:`build_box_postprocessor`:

    instances, kept = postprocessor(boxes, scores, image_shapes, score_thresh)

- ``boxes``: per image a (R_i, K * 4) or (R_i, 4) tensor of box predictions (absolute XYXY);
- ``scores``: per image (R_i, K + 1) class probabilities, background last;
- ``image_shapes``: per image (height, width);
- ``score_thresh``: the probability a detection must exceed (the caller's, so that a head that
  rescores probabilities, e.g. RDDN's TR-Post, can threshold before rescoring and pass 0);
- returns ``(instances, kept)``: per image an ``Instances`` with ``pred_boxes``, ``scores``,
  ``pred_classes``, and the proposal index of each detection — the contract of Detectron2's
  ``fast_rcnn_inference``.

``MODEL.ROI_HEADS.NMS_TYPE`` names the post-processor: ``"hard"`` (:class:`HardNMS`, Detectron2's
per-class NMS, its own code path), ``"sinkhorn"`` (``SinkhornNMS``, defect_det/sinkhorn_nms/), ``"soft"``
(``SoftNMS``, :mod:`.soft_nms`), ``"wbf"`` (``WeightedBoxFusion``, :mod:`.wbf`), or the
name of any class registered in :data:`BOX_POSTPROCESSOR_REGISTRY` (a user's own, e.g. Soft-NMS).
A post-processor may also contribute training losses (:meth:`BoxPostProcessor.losses`), which is how
end-to-end Sinkhorn NMS training enters the box predictor without a branch there.
"""
import abc
from typing import Dict, List, Tuple

import torch
from detectron2.modeling.roi_heads.fast_rcnn import fast_rcnn_inference
from detectron2.structures import Boxes, Instances
from detectron2.utils.registry import Registry
from torchvision.ops.boxes import _batched_nms_coordinate_trick, _batched_nms_vanilla  # the two paths of batched_nms

__all__ = ["BOX_POSTPROCESSOR_REGISTRY", "BoxPostProcessor", "HardNMS", "build_box_postprocessor",
           "candidates_from_predictions", "NMS_TYPES"]

BOX_POSTPROCESSOR_REGISTRY = Registry("BOX_POSTPROCESSOR")
BOX_POSTPROCESSOR_REGISTRY.__doc__ = """
Box post-processors of the ROI heads (see defect_det/modeling/roi_heads/postprocess.py). A registered
class is built as ``cls(cfg)`` and called as ``(boxes, scores, image_shapes, score_thresh)``.
"""

# the short names of MODEL.ROI_HEADS.NMS_TYPE -> registered class names
NMS_TYPES = {"hard": "HardNMS", "sinkhorn": "SinkhornNMS", "soft": "SoftNMS", "wbf": "WeightedBoxFusion"}


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


class BoxPostProcessor(abc.ABC):
    """Base class: per-image candidates -> detections (module doc). Subclasses implement ``__call__``;
    ``losses`` returns the extra training losses of the step ({} by default; ``has_losses`` says
    whether there are any, so that the predictor computes the inputs only then)."""

    has_losses = False

    @abc.abstractmethod
    def __call__(self, boxes: List[torch.Tensor], scores: List[torch.Tensor],
                 image_shapes: List[Tuple[int, int]], score_thresh: float) -> Tuple[List[Instances], List[torch.Tensor]]:
        """The post-processing (module doc): per-image boxes and probabilities -> (instances, kept indices)."""

    def losses(self, boxes: List[torch.Tensor], scores: List[torch.Tensor], proposals: List[Instances],
               num_classes: int, score_thresh: float) -> Dict[str, torch.Tensor]:
        """Training losses computed through the post-processing (``boxes`` / ``scores`` as in
        ``__call__``, ``proposals`` the sampled proposals with ``gt_boxes`` / ``gt_classes``)."""
        return {}


@BOX_POSTPROCESSOR_REGISTRY.register()
class HardNMS(BoxPostProcessor):
    """Detectron2's per-class hard NMS (``fast_rcnn_inference``) at ``MODEL.ROI_HEADS.NMS_THRESH_TEST``,
    keeping ``TEST.DETECTIONS_PER_IMAGE`` detections per image."""

    def __init__(self, cfg=None, *, nms_thresh: float = 0.5, topk_per_image: int = 100):
        if cfg is not None:
            nms_thresh, topk_per_image = cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST, cfg.TEST.DETECTIONS_PER_IMAGE
        self.nms_thresh = float(nms_thresh)
        self.topk_per_image = int(topk_per_image)

    def __call__(self, boxes, scores, image_shapes, score_thresh):
        if not torch.jit.is_tracing():
            return fast_rcnn_inference(boxes, scores, image_shapes, score_thresh, self.nms_thresh,
                                       self.topk_per_image)
        # traced (tools/export_model.py): the same steps, the NMS algorithm chosen at run time as in eager mode
        per_image = [self._traced_single_image(b, s, shape, score_thresh)
                     for b, s, shape in zip(boxes, scores, image_shapes)]
        return [x[0] for x in per_image], [x[1] for x in per_image]

    def _traced_single_image(self, boxes, scores, image_shape, score_thresh):
        """Detectron2's ``fast_rcnn_inference_single_image`` (filtering, clipping, per-class NMS, top k) with
        :func:`_batched_nms_as_eager` for the NMS."""
        boxes, scores, classes, index = candidates_from_predictions(boxes, scores, image_shape, score_thresh)
        if torch.onnx.is_in_onnx_export():
            # ONNX has no loop over a data-dependent number of NMS calls: torchvision's traced path (class offsets)
            keep = _batched_nms_coordinate_trick(boxes.float(), scores, classes, self.nms_thresh)
        else:
            keep = _batched_nms_as_eager(boxes.float(), scores, classes, self.nms_thresh)
        if self.topk_per_image >= 0:
            keep = keep[: self.topk_per_image]
        result = Instances(image_shape)
        result.pred_boxes = Boxes(boxes[keep])
        result.scores = scores[keep]
        result.pred_classes = classes[keep]
        return result, index[keep]


@torch.jit.script_if_tracing
def _batched_nms_as_eager(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor,
                          iou_threshold: float) -> torch.Tensor:
    """``torchvision.ops.batched_nms`` with its algorithm chosen per call as in eager mode: a loop over the classes
    above 4000 box coordinates on CPU (20000 on GPU), class-offset boxes in one NMS below. Traced, torchvision
    always takes the offsets, whose float rounding can keep another near-degenerate box than the eager model;
    scripted inside the trace, this keeps the exported model's detections equal to the eager model's."""
    if boxes.numel() > (4000 if boxes.device.type == "cpu" else 20000):
        return _batched_nms_vanilla(boxes, scores, idxs, iou_threshold)
    return _batched_nms_coordinate_trick(boxes, scores, idxs, iou_threshold)


def build_box_postprocessor(cfg) -> BoxPostProcessor:
    """The post-processor ``MODEL.ROI_HEADS.NMS_TYPE`` names ("hard", "sinkhorn" or a registered class)."""
    name = cfg.MODEL.ROI_HEADS.NMS_TYPE
    cls_name = NMS_TYPES.get(name, name)
    if cls_name not in BOX_POSTPROCESSOR_REGISTRY:
        known = sorted(set(NMS_TYPES) | set(k for k, _ in BOX_POSTPROCESSOR_REGISTRY))
        raise ValueError(f"MODEL.ROI_HEADS.NMS_TYPE must be one of {known}, got {name!r}")
    post = BOX_POSTPROCESSOR_REGISTRY.get(cls_name)(cfg)
    sinkhorn = cfg.MODEL.get("SINKHORN_NMS", None)
    if sinkhorn is not None and sinkhorn.E2E_LOSS_WEIGHT > 0 and not post.has_losses:
        raise ValueError(
            f"MODEL.SINKHORN_NMS.E2E_LOSS_WEIGHT={sinkhorn.E2E_LOSS_WEIGHT} trains through Sinkhorn NMS and needs "
            f"MODEL.ROI_HEADS.NMS_TYPE 'sinkhorn' (got {name!r}); to evaluate such a model with hard NMS, "
            "set NMS_TYPE 'hard' and E2E_LOSS_WEIGHT 0 at evaluation")
    return post
