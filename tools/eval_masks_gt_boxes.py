#!/usr/bin/env python
"""
Mask quality of a trained model on the ground-truth boxes (the mask branch alone, independent of
the detector; see defect_det/weak_mask/evaluation.py): mean mask IoU and the share of instances
with IoU >= 0.5 / 0.75 on every DATASETS.TEST entry (or --datasets).

    python tools/eval_masks_gt_boxes.py --config-file configs/WeakMask/synthetic/mask_rcnn_R18_FPN_box_supervised_refine.yaml \
        --out output/x/masks_gt_boxes.json MODEL.WEIGHTS output/weak_mask_table/seed0/box/model_final.pth
"""
import argparse
import json
import os

from tabulate import tabulate

import defect_det  # noqa: F401
from detectron2.checkpoint import DetectionCheckpointer

from defect_det.config import load_defect_cfg  # noqa: E402
from defect_det.engine import DefectTrainer  # noqa: E402
from defect_det.weak_mask.evaluation import masks_on_gt_boxes_for_datasets  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--datasets", nargs="+", default=None,
                   help="default: DATASETS.TEST (put KEY VALUE overrides before this flag or use DATASETS.TEST)")
    p.add_argument("--out", default=None, help="write {dataset: metrics} as JSON")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = p.parse_args(argv)
    cfg = load_defect_cfg(args.config_file, args.opts)
    if not cfg.MODEL.MASK_ON:
        raise SystemExit(f"{args.config_file}: MODEL.MASK_ON is False, the model predicts no masks")
    if not cfg.MODEL.WEIGHTS:
        raise SystemExit("MODEL.WEIGHTS is empty: pass the trained model (MODEL.WEIGHTS path/model_final.pth)")
    cfg.freeze()
    model = DefectTrainer.build_model(cfg)
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    results = masks_on_gt_boxes_for_datasets(cfg, model, args.datasets or list(cfg.DATASETS.TEST))
    rows = [[name, f"{100 * r['mIoU']:.1f}", f"{100 * r['IoU>=0.5']:.1f}", f"{100 * r['IoU>=0.75']:.1f}",
             r["instances"], r["skipped"]] for name, r in results.items()]
    print(tabulate(rows, headers=["dataset", "mIoU %", "IoU>=0.5 %", "IoU>=0.75 %", "instances", "skipped"],
                   tablefmt="pipe"), flush=True)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1, sort_keys=True)
        print(f"[eval_masks_gt_boxes] wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
