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

from detectron2.config import configurable
from detectron2.modeling.roi_heads import (
    ROI_HEADS_REGISTRY,
    CascadeROIHeads,
    FastRCNNOutputLayers,
    StandardROIHeads,
)
from detectron2.modeling.roi_heads import cascade_rcnn as d2_cascade

from ...layers.sinkhorn_nms import SinkhornNMSParams
from .sinkhorn_inference import sinkhorn_fast_rcnn_inference

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
    def __init__(self, *args, nms_type: str = "hard", sinkhorn_params: SinkhornNMSParams = None, **kwargs):
        super().__init__(*args, **kwargs)
        if nms_type not in NMS_TYPES:
            raise ValueError(f"nms_type must be one of {NMS_TYPES}, got {nms_type!r}")
        self.nms_type = nms_type
        self.sinkhorn_params = sinkhorn_params or SinkhornNMSParams()

    @classmethod
    def from_config(cls, cfg, input_shape, **kwargs):
        ret = super().from_config(cfg, input_shape)
        ret.update(kwargs)
        ret["nms_type"] = nms_type_from_cfg(cfg)
        ret["sinkhorn_params"] = sinkhorn_nms_params_from_cfg(cfg)
        return ret

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
class DefectStandardROIHeads(StandardROIHeads):
    """``StandardROIHeads`` with :class:`DefectFastRCNNOutputLayers` (NMS by ``NMS_TYPE``)."""

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
class DefectCascadeROIHeads(CascadeROIHeads):
    """``CascadeROIHeads`` whose final post-processing follows ``NMS_TYPE``."""

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
