#!/usr/bin/env python
"""
Run a trained defect_det model on a folder of images (and their templates) and write what a person checks:
``predictions.json`` (COCO results with file names), ``decisions.csv`` (OK / NG per image, max score, top
class, number of defects), one PNG panel per image (image | template | |I - T| with the detections) and
``report.html`` (NG images first, sortable, thumbnails linking to the panels).

    python tools/predict.py --config-file configs/RDDN/synthetic/faster_rcnn_R18_FPN_pre_align_pt.yaml \\
        --input datasets/synthetic_fabric/seen --output output/predict MODEL.WEIGHTS output/demo/model_final.pth

Templates are found by the Tianchi rule (``template_<prefix>.jpg`` beside the image, ``<prefix>`` the name up
to its first ``_``), in ``--templates DIR``, or listed in ``--pairs CSV`` (``image,template`` per line).
"""
from defect_det.inference.cli import main

if __name__ == "__main__":
    main(description=__doc__)
