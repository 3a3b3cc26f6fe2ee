"""defect_det's shared ROI heads (registered in Detectron2's ROI_HEADS_REGISTRY on import) and the box
post-processing seam every box head calls (:mod:`.postprocess`). Method-specific heads live with their
method: RDDN's in ``defect_det/rddn/``, the box-supervised mask heads in ``defect_det/weak_mask/``."""
from .config import add_roi_heads_config
from .containment import ContainmentMixin, suppress_contained
from .heads import (
    PIXELS_KEY,
    TEMPLATE_PIXELS_KEY,
    TEMPLATE_PIXELS_VALID_KEY,
    DefectCascadeROIHeads,
    DefectFastRCNNOutputLayers,
    DefectStandardROIHeads,
    ImageInputsMixin,
)
from .postprocess import (
    BOX_POSTPROCESSOR_REGISTRY,
    NMS_TYPES,
    BoxPostProcessor,
    HardNMS,
    build_box_postprocessor,
    candidates_from_predictions,
)
from .soft_nms import SOFT_NMS_METHODS, SoftNMS, soft_nms
from .wbf import WeightedBoxFusion, weighted_box_fusion
from .proposal_jitter import GTJitterMixin, add_jittered_gt_proposals, gt_jitter_from_cfg, jitter_boxes

__all__ = [
    "BOX_POSTPROCESSOR_REGISTRY",
    "BoxPostProcessor",
    "ContainmentMixin",
    "DefectCascadeROIHeads",
    "DefectFastRCNNOutputLayers",
    "DefectStandardROIHeads",
    "GTJitterMixin",
    "HardNMS",
    "ImageInputsMixin",
    "NMS_TYPES",
    "PIXELS_KEY",
    "SOFT_NMS_METHODS",
    "SoftNMS",
    "TEMPLATE_PIXELS_KEY",
    "TEMPLATE_PIXELS_VALID_KEY",
    "WeightedBoxFusion",
    "add_jittered_gt_proposals",
    "add_roi_heads_config",
    "build_box_postprocessor",
    "candidates_from_predictions",
    "gt_jitter_from_cfg",
    "jitter_boxes",
    "soft_nms",
    "suppress_contained",
    "weighted_box_fusion",
]
