#!/usr/bin/env python
"""
The NMS comparison on the synthetic fabric benchmark (projects/SinkhornNMS/README.md, issue 14).

The demo detector is trained once with hard NMS (row ``hard``); Sinkhorn NMS (three temperatures) and
Soft-NMS (three Gaussian widths, linear) and weighted box fusion (two IoU thresholds) are evaluated on its weights; ``e2e`` fine-tunes it through Sinkhorn
NMS (loss weight ramped in), ``hard_ft`` the same without that loss. Scored on the validation split (AP50,
AP75, detections per found box, share of boxes found twice); one JSON record per row and seed in
``projects/SinkhornNMS/results/`` (never recomputed); ``--final`` evaluates chosen rows once on the test splits.

    python tools/sinkhorn_nms_table.py --list
    python tools/sinkhorn_nms_table.py --seeds 0 1 2 --jobs 2
    python tools/sinkhorn_nms_table.py --render
    python tools/sinkhorn_nms_table.py --final --rows hard sinkhorn soft e2e --seeds 0 1 2
"""
from defect_det.sinkhorn_nms.table import main

if __name__ == "__main__":
    main(description=__doc__)
