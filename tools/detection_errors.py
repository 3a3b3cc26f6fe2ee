#!/usr/bin/env python
"""
Where a detector's AP goes (issue 11): every detection of a COCO results file classified against the
ground truth, per score threshold, and the recall the detections could reach.

    python tools/detection_errors.py datasets/synthetic_fabric/annotations/fabric_val.json \\
        output/recipe_search/pre_fast_pt_s1/inference/synthetic_fabric_val/coco_instances_results.json

Per image, detections are taken in decreasing score and each is, in this order of precedence:
  TP        IoU >= 0.5 with a not yet matched box of its class (greedy, as COCO matching at IoU 0.5)
  duplicate IoU >= 0.5 with a box of its class that an earlier detection matched
  wrong_cls IoU >= 0.5 with a box of another class only
  poor_loc  best IoU with any box in [0.1, 0.5): a fragment of a defect, or a box too large
  bg        best IoU < 0.1 (on an image with defects)
  bg_normal any detection on a defect-free image
For ``poor_loc`` it also reports, per class of the overlapped box, the median area ratio
detection / box (< 1: fragments). Recall: the share of boxes with a detection of any class / of
their class at IoU >= 0.5 (at any score, and above each threshold).
"""
from defect_det.evaluation.detection_errors import main

if __name__ == "__main__":
    main(description=__doc__)
