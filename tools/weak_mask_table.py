#!/usr/bin/env python
"""
The box-supervised mask table on the synthetic fabric benchmark (projects/WeakMask/README.md, issue 14).

Same detector for every row (the demo model, TR-Pre + alignment from our pre-trained backbone, with a small
mask head: configs/WeakMask/synthetic/), same schedule; rows:

    box              ours: BoxSupervisedMaskHead trained from boxes only (template-difference loss, kappa 0.4)
    box_no_template  ours without the template-difference loss (projection + affinity only)
    mask             upper bound: Detectron2's mask head trained on the exact masks
    filled_box       lower bound: box's detections, mask = the filled box          (evaluates box's weights)
    box_refine*      ours + entropy-constrained refinement, confidence 0.8/0.9/0.95 (evaluates box's weights)
    diff_k*          no network: image - template thresholded at kappa x its peak in the GT box
    ptg_box          no template at all: ours on the PTG detector, colour affinities only
    ptg_filled_box   its lower bound (evaluates ptg_box's weights)
    median_k*        no network, no template: image - its local median, thresholded

Each row is scored on the validation split (every choice: kappa, the refinement threshold): mask IoU on the
ground-truth boxes (the mask branch alone, with a bootstrap interval over instances), COCO mask AP50 and box
AP50; one JSON record per row and seed in projects/WeakMask/results/ (a finished row is never recomputed);
--final evaluates chosen rows once on the test splits. Training rows run one intra-op thread each, --jobs at a
time. Needs `make data` (the generator writes the exact masks the upper bound trains on and every row is
scored against).

    python tools/weak_mask_table.py --list
    python tools/weak_mask_table.py --seeds 0 1 2 --jobs 2
    python tools/weak_mask_table.py --rows diff_k0.3 diff_k0.4 diff_k0.5      # the network-free rows only
    python tools/weak_mask_table.py --render
    python tools/weak_mask_table.py --final --rows filled_box box box_refine mask diff_k0.4 --seeds 0 1 2
"""
from defect_det.weak_mask.table import main

if __name__ == "__main__":
    main(description=__doc__)
