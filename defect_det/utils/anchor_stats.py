"""How well a config's anchors fit a dataset's boxes (issue 11): what ``tools/anchor_stats.py`` runs.

For every training box: the IoU of its best anchor and how many anchors exceed the RPN's positive
threshold(s), per class. Anchors are Detectron2's (``build_anchor_generator`` of the config) on the
feature maps of each image resized as at test time (``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST``,
strides of the FPN levels); boxes are scaled the same way.

:func:`anchor_stats` computes the statistics; :func:`get_parser` / :func:`main` are the command line.
"""
import argparse
import json
from collections import defaultdict
from typing import Optional, Sequence

import numpy as np
import torch

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.transforms import ResizeShortestEdge
from detectron2.layers import ShapeSpec
from detectron2.modeling.anchor_generator import build_anchor_generator
from detectron2.structures import Boxes, BoxMode, pairwise_iou

from ..config import get_defect_cfg

__all__ = ["anchor_stats", "get_parser", "main"]


def anchor_stats(cfg, dataset_dicts, thresholds=(0.5, 0.7), class_names=None):
    """
    Args:
        cfg: a defect_det config (``MODEL.RPN.IN_FEATURES`` named ``p<k>``, stride 2**k;
            ``MODEL.ANCHOR_GENERATOR``; ``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST``).
        dataset_dicts: Detectron2 dataset dicts (``height``, ``width``, ``annotations`` with ``bbox``,
            ``bbox_mode``, ``category_id``).
        thresholds: IoU thresholds T; for each, the mean number of anchors per box with IoU > T.
        class_names: category id -> name (e.g. ``thing_classes``); default: the ids as strings.
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
            cache[(nh, nw)] = Boxes.cat(gen(feats))  # (A, 4) XYXY anchors of every level
        anchors = cache[(nh, nw)]
        for a in d.get("annotations", []):
            box = BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS)
            box = tf.apply_box(np.array([box], dtype=np.float64))[0]
            iou = pairwise_iou(Boxes(torch.as_tensor(np.asarray([box], dtype=np.float32))), anchors)[0]  # (A,)
            per_class[a["category_id"]].append([iou.max().item()] + [(iou > t).sum().item() for t in thresholds])

    def summary(rows):
        r = np.array(rows, dtype=np.float64)  # (boxes, 1 + len(thresholds))
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


def get_parser(description: Optional[str] = None) -> argparse.ArgumentParser:
    """The command line of ``tools/anchor_stats.py`` (``description``: its ``--help`` text)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--dataset", default=None, help="registered dataset (default: the config's first DATASETS.TRAIN)")
    p.add_argument("--thresholds", type=float, nargs="+", default=[0.5, 0.7])
    p.add_argument("--json", default=None, help="also write the statistics here")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return p


def main(argv: Optional[Sequence[str]] = None, description: Optional[str] = None) -> dict:
    """Parse ``argv`` (default ``sys.argv[1:]``), compute :func:`anchor_stats` on the dataset, print a
    table per class (and ALL), optionally write the statistics as JSON; returns them."""
    args = get_parser(description).parse_args(argv)
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
