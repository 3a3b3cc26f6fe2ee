#!/usr/bin/env python
"""
Choose thresholds on a labelled split: the image-level OK/NG threshold that keeps a target defect recall
(and the best-F1 one), per-class score thresholds, image-level AUROC / AP (detectors and SegDecNet alike),
a confusion matrix with background, the false-negative and false-positive images. Writes thresholds.json
(``tools/predict.py --thresholds`` reads it) and PNG plots (image PR and ROC, per-class PR, confusion matrix).

    python tools/calibrate.py --config-file configs/RDDN/synthetic/faster_rcnn_R18_FPN_pre_align_pt.yaml \\
        --dataset synthetic_fabric_val --recall 0.99 --output output/calibrate MODEL.WEIGHTS output/demo/model_final.pth

Calibrate on a validation split, never on the test split you report.
"""
from defect_det.inference.calibrate import main

if __name__ == "__main__":
    main(description=__doc__)
