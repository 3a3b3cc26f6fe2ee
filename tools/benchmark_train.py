#!/usr/bin/env python
"""Training throughput of the CPU configs: images per second of a FULL training step (data wait,
forward, backward, optimizer), broken down by phase, with ``torch.profiler``'s top operators, for
several variants side by side in ONE run (issue 11, item 1).

    python tools/benchmark_train.py                      # the default variants below, 2 threads
    python tools/benchmark_train.py --variants before after --iters 20 --profile 3
    python tools/benchmark_train.py --variants after pre inter ptg --json out.json
    python tools/benchmark_train.py --config-file my.yaml --opts DATALOADER.NUM_WORKERS 1  # one custom row

Variants (``--variants``; each = a config file + overrides + intra-op threads):

- ``before``: the demo model as it trained before issue 11 (``configs/synthetic/faster_rcnn_R18_FPN_
  cpu.yaml`` with the settings it had then restored by overrides: 2 DataLoader workers, 128 sampled
  ROIs per image, 2x2 ROIAlign samples per bin; 2 intra-op threads);
- ``no_workers``, ``one_worker``, ``roi64``: one change at a time (no DataLoader workers; one worker;
  64 ROIs per image with 2x2 samples, no workers);
- ``after``: the config as committed now (no workers, 64 ROIs per image, one ROIAlign sample per bin);
- ``pre``, ``inter``, ``ptg``: TemplateRCNN's template modes on the committed RDDN synthetic configs
  (``configs/RDDN/synthetic/faster_rcnn_R18_FPN_{pre_align,inter,ptg}.yaml``).

The ratio column is images/s relative to the first variant. Every variant trains from the same
seed on the same data (``DATASETS.TRAIN`` of its config: run ``make data`` first). Measure on an
idle machine (nothing else running): the numbers are wall-clock. The JSON (``--json``, default
``projects/Benchmark/results/train_throughput.json``) has the machine, command, commit and every
row; README tables are pasted from the printed markdown.
"""
from defect_det.utils.train_benchmark import main

if __name__ == "__main__":
    main(description=__doc__)
