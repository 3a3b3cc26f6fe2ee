#!/usr/bin/env python
"""
Pre-train a detector's bottom-up backbone on generated fabric with image-level labels only.

Tasks: texture family (cross-entropy) and which of the 14 defect types are present (multi-label
BCE; normal images have none). Masks and boxes are never read (only the image-level keys of the
generator's meta.json); the held-out texture families (herringbone, plaid: the unseen-texture
evaluation) and the benchmark's generator seed are refused. Design, results and how to load other
weights: projects/Benchmark/PRETRAIN.md; the reusable parts: defect_det/engine/pretrain/.

Examples::

    # the CPU baseline's backbone (half-width ResNet-18), image input; generates its own data set
    # (seed 1, seen families only) under $DETECTRON2_DATASETS/synthetic_fabric_pretrain/
    python tools/pretrain_backbone.py --iters 5000 --threads 2
    # TR-Pre: the backbone sees (I - aligned T) / (2 * PIXEL_STD)
    python tools/pretrain_backbone.py --input difference --iters 5000
    # interrupted (or --stop-at N): continue exactly where the last checkpoint left off
    python tools/pretrain_backbone.py --iters 5000 --resume
    # then train a detector from it
    python tools/train_net.py --config-file configs/synthetic/faster_rcnn_R18_FPN_cpu.yaml \\
        MODEL.WEIGHTS output/pretrain/faster_rcnn_R18_FPN_cpu_image_s0/backbone.pth

Writes into --output-dir: backbone.pth (Detectron2 checkpoint {"model": {"backbone.bottom_up.*": ...},
"__author__", "matching_heuristics": False}), backbone.json (command, seed, iterations, time, data,
final train loss / accuracy, held-out validation metrics, sha256 of backbone.pth), checkpoint.pth
(resumable training state), metrics.jsonl and log.txt. A finished run is not recomputed.
Trailing KEY VALUE pairs override the config (e.g. MODEL.RESNETS.RES2_OUT_CHANNELS 64).
"""
import sys

from defect_det.engine.pretrain.cli import main

if __name__ == "__main__":
    sys.exit(main(description=__doc__))
