#!/usr/bin/env python
"""
How well a config's anchors fit a dataset's boxes (issue 11): for every training box, the IoU of its
best anchor and how many anchors exceed the RPN's positive threshold, per class.

    python tools/anchor_stats.py --config-file configs/synthetic/faster_rcnn_R18_FPN_cpu.yaml
    python tools/anchor_stats.py --config-file configs/synthetic/faster_rcnn_R18_FPN_cpu.yaml \\
        --thresholds 0.5 0.7 MODEL.ANCHOR_GENERATOR.SIZES "[[8,11,16],[22,32,45],[64,90,128],[181,256,362]]"

Anchors are Detectron2's (``build_anchor_generator`` of the config) on the feature maps of each image
resized as at test time (``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST``, strides of the FPN levels);
boxes are scaled the same way. A box whose best anchor is below the positive threshold is an RPN
positive only through Detectron2's low-quality matching (its single best anchor).
"""
from defect_det.utils.anchor_stats import main

if __name__ == "__main__":
    main(description=__doc__)
