"""ROI heads registered in Detectron2's ROI_HEADS_REGISTRY on import."""
from .sinkhorn_heads import (
    DefectCascadeROIHeads,
    DefectFastRCNNOutputLayers,
    DefectStandardROIHeads,
    nms_type_from_cfg,
    sinkhorn_nms_params_from_cfg,
)
from .sinkhorn_inference import sinkhorn_fast_rcnn_inference
from .reference_heads import (
    ContextROIPooler,
    RDDNCascadeROIHeads,
    RDDNStandardROIHeads,
    context_boxes,
    region_similarity,
)

__all__ = [
    "ContextROIPooler",
    "RDDNCascadeROIHeads",
    "RDDNStandardROIHeads",
    "context_boxes",
    "region_similarity",
    "DefectCascadeROIHeads",
    "DefectFastRCNNOutputLayers",
    "DefectStandardROIHeads",
    "nms_type_from_cfg",
    "sinkhorn_fast_rcnn_inference",
    "sinkhorn_nms_params_from_cfg",
]
