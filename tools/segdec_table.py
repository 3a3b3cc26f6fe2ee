#!/usr/bin/env python
"""
The SegDecNet tables on the synthetic DAGM-style benchmark (projects/SegDecNet/README.md): the
ablation (full model, then each training extension off) and the mixed-supervision curve
(N = 0, 5, 20, all defective training images with pixel labels).

Every row trains ``configs/SegDecNet/synthetic_dagm_cpu.yaml`` with the SAME schedule and seed
through ``tools/train_net.py``, once per class, and reads the image-level AP, AUROC, detection
rate and pixel Dice of the class's test split from ``--save-results``, plain and with the
test-time augmentation of the config's FLIP (``TEST.AUG.ENABLED``: the dihedral group, 8 views;
columns "(TTA)"); rows trained before it existed are evaluated again from their ``model_final.pth``. The data is generated first
(if absent) into ``<out>/datasets/synthetic_dagm`` with ``--train-images`` (default 320, i.e. 80
defective images per class: real DAGM classes 1-6 have 66-83, and N = 5, 20 are real subsets); the subprocesses read it through
``DETECTRON2_DATASETS``. Rows already done (``results.json`` exists) are reused unless ``--force``.

    python tools/segdec_table.py                          # every row, classes 1 2
    python tools/segdec_table.py --rows full no_dt --classes 1 2 3 4 5 6 --seeds 0 1
    python tools/segdec_table.py --list
    python tools/segdec_table.py --rows full --classes 1 --epochs 35 --out output/x MODEL.SEGDEC.FLIP both

Every training runs with ``--threads`` torch threads (default 1) and no data-loader workers: this
network is small, and several processes with many threads each on a 2-core machine run ~10x slower
than one thread each (measured: 0.42 vs 0.042 s/iteration). ``--jobs`` trainings run at once
(default: the number of cores / threads).

Prints a markdown table (mean over classes and seeds, and the image AP of each class, plain and TTA) and writes it to ``<out>/table.md``.
"""
from defect_det.segdec.table import main

if __name__ == "__main__":
    main(description=__doc__.split("\n\n")[1])
