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
import argparse
import json
from collections import defaultdict

import numpy as np
import torch

import defect_det  # noqa: F401  (registers datasets, configs)
from defect_det.config import get_defect_cfg  # noqa: E402
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.transforms import ResizeShortestEdge
from detectron2.modeling.anchor_generator import build_anchor_generator
from detectron2.layers import ShapeSpec
from detectron2.structures import Boxes, BoxMode, pairwise_iou


def anchor_stats(cfg, dataset_dicts, thresholds=(0.5, 0.7), class_names=None):
    """
    Returns:
        dict: ``classes`` {name: {"boxes", "best_iou_mean", "above_<t>_per_box" for each t}} and
        ``all`` (the same over every box), plus ``anchors_per_location``.
    """
    strides = {f: 2 ** int(f[1:]) for f in cfg.MODEL.RPN.IN_FEATURES}
    shapes = [ShapeSpec(stride=strides[f]) for f in cfg.MODEL.RPN.IN_FEATURES]
    gen = build_anchor_generator(cfg, shapes)
    resize = ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
    per_class = defaultdict(list)
    cache = {}
    for d in dataset_dicts:
        h, w = d["height"], d["width"]
        tf = resize.get_transform(np.zeros((h, w, 1), dtype=np.uint8))
        nh, nw = tf.new_h, tf.new_w
        if (nh, nw) not in cache:
            feats = [torch.zeros(1, 1, int(np.ceil(nh / s.stride)), int(np.ceil(nw / s.stride))) for s in shapes]
            cache[(nh, nw)] = Boxes.cat(gen(feats))
        anchors = cache[(nh, nw)]
        for a in d.get("annotations", []):
            box = BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS)
            box = tf.apply_box(np.array([box], dtype=np.float64))[0]
            iou = pairwise_iou(Boxes(torch.as_tensor(np.asarray([box], dtype=np.float32))), anchors)[0]
            per_class[a["category_id"]].append([iou.max().item()] + [(iou > t).sum().item() for t in thresholds])

    def summary(rows):
        r = np.array(rows, dtype=np.float64)
        out = {"boxes": len(r), "best_iou_mean": float(r[:, 0].mean())}
        for i, t in enumerate(thresholds):
            out[f"above_{t}_per_box"] = float(r[:, 1 + i].mean())
        return out

    names = class_names or {}
    return {
        "anchors_per_location": gen.num_cell_anchors[0],
        "all": summary([x for v in per_class.values() for x in v]),
        "classes": {names[c] if c < len(names) else str(c): summary(v) for c, v in sorted(per_class.items())},
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--dataset", default=None, help="registered dataset (default: the config's first DATASETS.TRAIN)")
    p.add_argument("--thresholds", type=float, nargs="+", default=[0.5, 0.7])
    p.add_argument("--json", default=None, help="also write the statistics here")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = p.parse_args(argv)
    cfg = get_defect_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    name = args.dataset or cfg.DATASETS.TRAIN[0]
    stats = anchor_stats(cfg, DatasetCatalog.get(name), args.thresholds,
                         MetadataCatalog.get(name).get("thing_classes"))
    print(f"{name}: anchors {list(cfg.MODEL.ANCHOR_GENERATOR.SIZES)} x ratios "
          f"{list(cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS)} ({stats['anchors_per_location']} per location)")
    head = f"{'class':24s} {'boxes':>5s} {'best IoU':>8s} " + " ".join(f"{'>' + str(t) + '/box':>9s}" for t in args.thresholds)
    print(head)
    for cname, s in list(stats["classes"].items()) + [("ALL", stats["all"])]:
        print(f"{cname:24s} {s['boxes']:5d} {s['best_iou_mean']:8.2f} "
              + " ".join(f"{s[f'above_{t}_per_box']:9.1f}" for t in args.thresholds))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(stats, f, indent=1)
    return stats


if __name__ == "__main__":
    main()
