#!/usr/bin/env python
"""
The box-supervised mask table on the synthetic fabric benchmark (projects/WeakMask/README.md).

Same detector (``configs/WeakMask/synthetic/``: the RDDN TR-Pre + alignment CPU model with a small
mask head), same schedule and seed; COCO ``segm`` (and ``bbox``) AP on the seen-texture test split
and the unseen-texture split. Two trainings, four rows:

    filled_box     lower bound: the box-supervised model's detections, mask = the filled box
    box_no_template  ours without the template-difference loss (projection + affinity only)
    box            ours: BoxSupervisedMaskHead trained from boxes only, no refinement
    box_refine     ours + entropy-constrained refinement (the same weights, evaluated with it)
    mask           upper bound: Detectron2's mask head trained on the exact masks

and the share of the lower-to-upper-bound gap of segm AP50 that each row recovers,
``(row - lower) / (upper - lower)``. Because segm AP50 also depends on what the (small, CPU) detector
finds, every row is also scored on the ground-truth boxes (``tools/eval_masks_gt_boxes.py``: the
mask branch alone, given each test defect's true box and class): mean mask IoU, with its own gap.

    python tools/weak_mask_table.py --iters 600
    python tools/weak_mask_table.py --iters 600 --rows box mask     # a subset
    python tools/weak_mask_table.py --list

Rows already done (``results.json``, ``masks_gt_boxes.json`` exist) are reused unless ``--force``. Needs ``make data`` (the
generator writes the exact masks the upper bound trains on and every row is scored against).
"""
from defect_det.weak_mask.table import main

if __name__ == "__main__":
    main(description=__doc__)
