"""Sinkhorn NMS (projects/SinkhornNMS): NMS as entropy-regularised Sinkhorn matching of candidate
detections to regions, differentiable end to end, on our batched Sinkhorn op (``defect_det.layers``).

- :mod:`.nms`: the algorithm (:func:`sinkhorn_nms`, :class:`SinkhornNMSParams`);
- :mod:`.postprocess`: :class:`SinkhornNMS`, the ROI heads' box post-processor
  (``MODEL.ROI_HEADS.NMS_TYPE: "sinkhorn"``, registered on import);
- :mod:`.loss`: the end-to-end training loss after the suppression;
- :mod:`.config`: ``add_sinkhorn_nms_config`` (``MODEL.SINKHORN_NMS``).
"""
from .config import add_sinkhorn_nms_config
from .loss import gather_candidates, sinkhorn_nms_matching_loss
from .nms import SinkhornNMSParams, SinkhornNMSResult, pad_candidates, pairwise_box_iou, sinkhorn_nms
from .postprocess import (
    SinkhornNMS,
    candidates_from_predictions,
    sinkhorn_fast_rcnn_inference,
    sinkhorn_nms_params_from_cfg,
)

__all__ = [
    "SinkhornNMS",
    "SinkhornNMSParams",
    "SinkhornNMSResult",
    "add_sinkhorn_nms_config",
    "candidates_from_predictions",
    "gather_candidates",
    "pad_candidates",
    "pairwise_box_iou",
    "sinkhorn_fast_rcnn_inference",
    "sinkhorn_nms",
    "sinkhorn_nms_matching_loss",
    "sinkhorn_nms_params_from_cfg",
]
