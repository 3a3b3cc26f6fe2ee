#!/usr/bin/env python
"""
A network-free reference for box-supervised defect masks (projects/WeakMask/README.md): inside each
ground-truth box, threshold the image - template difference at kappa x its peak in the box, and
score that mask against the exact mask (mean IoU, as tools/eval_masks_gt_boxes.py scores a model),
beside the filled box. The template is registered to the image first (phase correlation, as
INPUT.TEMPLATE.ALIGN does).

    python tools/template_difference_masks.py --kappa 0.3 0.4 0.5
    python tools/template_difference_masks.py --datasets synthetic_fabric_test --blur 0
"""
import argparse

import cv2
import numpy as np
from tabulate import tabulate

import defect_det  # noqa: F401
from detectron2.data import DatasetCatalog
from detectron2.structures import BoxMode

from defect_det.data.template_ops import align_template
from defect_det.weak_mask.evaluation import annotation_mask, mask_iou


def _read(path, what, record):
    img = cv2.imread(path)
    if img is None:
        raise SystemExit(f"{record}: cannot read {what} {path!r}")
    return img.astype(np.float32)


def box_masks(dataset_dicts, kappas, blur):
    """{'filled box': [IoU ...], 'kappa=k': [IoU ...]} over every annotation with a segmentation."""
    ious = {"filled box": [], **{f"kappa={k:g}": [] for k in kappas}}
    for d in dataset_dicts:
        anns = [a for a in d.get("annotations", []) if a.get("segmentation")]
        if not anns:
            continue
        if not d.get("template_file_name"):
            raise SystemExit(f"{d['file_name']}: no template_file_name (a fabric dataset is needed)")
        image = _read(d["file_name"], "image", d["file_name"])
        template, _ = align_template(image, _read(d["template_file_name"], "template", d["file_name"]))
        diff = np.linalg.norm(image - template.astype(np.float32), axis=2)
        if blur > 0:
            diff = cv2.GaussianBlur(diff, (0, 0), blur)
        record = dict(d, annotations=anns)
        for i, a in enumerate(anns):
            gt = annotation_mask(record, i)
            x0, y0, x1, y1 = (int(round(v)) for v in BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS))
            box = np.zeros_like(gt)
            box[y0:y1, x0:x1] = True
            inside = diff[y0:y1, x0:x1]
            ious["filled box"].append(mask_iou(box, gt))
            for k in kappas:
                m = np.zeros_like(gt)
                if inside.size:
                    m[y0:y1, x0:x1] = inside >= k * inside.max()
                ious[f"kappa={k:g}"].append(mask_iou(m, gt))
    return ious


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["synthetic_fabric_test", "synthetic_fabric_unseen"])
    p.add_argument("--kappa", type=float, nargs="+", default=[0.4])
    p.add_argument("--blur", type=float, default=1.5, help="Gaussian sigma (px) on the difference; 0 = none")
    args = p.parse_args(argv)
    bad = [k for k in args.kappa if not 0.0 < k <= 1.0]
    if bad:
        raise SystemExit(f"--kappa must be in (0, 1], got {bad}")
    rows = []
    for name in args.datasets:
        ious = box_masks(DatasetCatalog.get(name), args.kappa, args.blur)
        rows += [[name, key, len(v), f"{100 * np.mean(v):.1f}" if v else "nan"] for key, v in ious.items()]
    print(f"mask IoU on the GT boxes, difference blurred by {args.blur:g} px")
    print(tabulate(rows, headers=["dataset", "mask", "instances", "mIoU %"], tablefmt="pipe"))
    return rows


if __name__ == "__main__":
    main()
