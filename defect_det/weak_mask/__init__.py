"""Masks trained from boxes only (projects/WeakMask): ``BoxSupervisedMaskHead`` (projection, pairwise
affinity and template-difference losses), entropy-constrained refinement at inference, the filled-box
lower bound, and mask quality measured on the ground-truth boxes.

- :mod:`.mask_head`: ``BoxSupervisedMaskHead`` (registered in ``ROI_MASK_HEAD_REGISTRY``) and its losses;
- :mod:`.affinity`: image cues and pairwise affinities on the ROI grids;
- :mod:`.refine`: ``EntropyConstrainedRefiner``;
- :mod:`.filled_box_head`: ``FilledBoxMaskHead`` (registered);
- :mod:`.evaluation`: masks on the ground-truth boxes (mIoU per instance);
- :mod:`.config`: ``add_weak_mask_config``;
- :mod:`.benchmark` and :mod:`.table`: what ``tools/benchmark_weak_mask.py`` and
  ``tools/weak_mask_table.py`` run (not imported here).
The head reads the input images as arguments, which defect_det's ROI heads pass (GeneralizedRCNN or
TemplateRCNN).
"""
from .affinity import image_cues, neighbour_offsets, neighbour_sum, pairwise_affinity, pool_cues, shift_to_neighbours
from .config import add_weak_mask_config
from .evaluation import annotation_mask, decode_segmentation, mask_iou, masks_on_gt_boxes, masks_on_gt_boxes_for_datasets
from .filled_box_head import FilledBoxMaskHead
from .mask_head import (
    BoxSupervisedMaskHead,
    box_grid_targets,
    pairwise_loss,
    projection_loss,
    template_difference_loss,
)
from .refine import EntropyConstrainedRefiner, RefinementResult, binary_entropy_from_logits

__all__ = [
    "BoxSupervisedMaskHead",
    "EntropyConstrainedRefiner",
    "FilledBoxMaskHead",
    "RefinementResult",
    "add_weak_mask_config",
    "annotation_mask",
    "binary_entropy_from_logits",
    "box_grid_targets",
    "decode_segmentation",
    "image_cues",
    "mask_iou",
    "masks_on_gt_boxes",
    "masks_on_gt_boxes_for_datasets",
    "neighbour_offsets",
    "neighbour_sum",
    "pairwise_affinity",
    "pairwise_loss",
    "pool_cues",
    "projection_loss",
    "shift_to_neighbours",
    "template_difference_loss",
]
