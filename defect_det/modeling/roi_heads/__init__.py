"""ROI heads registered in Detectron2's ROI_HEADS_REGISTRY (and mask heads in ROI_MASK_HEAD_REGISTRY)
on import."""
from .sinkhorn_heads import (
    DefectCascadeROIHeads,
    DefectFastRCNNOutputLayers,
    DefectStandardROIHeads,
    nms_type_from_cfg,
    sinkhorn_nms_params_from_cfg,
)
from .sinkhorn_inference import sinkhorn_fast_rcnn_inference
from .containment import ContainmentMixin, suppress_contained
from .proposal_jitter import GTJitterMixin, add_jittered_gt_proposals, gt_jitter_from_cfg, jitter_boxes
from .reference_heads import (
    ContextROIPooler,
    RDDNCascadeROIHeads,
    RDDNStandardROIHeads,
    context_boxes,
    region_similarity,
)
from .box_mask_head import FilledBoxMaskHead
from .mask_refine import EntropyConstrainedRefiner
from .weak_mask_head import BoxSupervisedMaskHead

__all__ = [
    "BoxSupervisedMaskHead",
    "EntropyConstrainedRefiner",
    "ContainmentMixin",
    "FilledBoxMaskHead",
    "GTJitterMixin",
    "add_jittered_gt_proposals",
    "gt_jitter_from_cfg",
    "jitter_boxes",
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
    "suppress_contained",
]
