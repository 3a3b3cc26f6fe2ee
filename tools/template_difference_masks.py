#!/usr/bin/env python
"""
A network-free reference for box-supervised defect masks (projects/WeakMask/README.md): inside each
ground-truth box, threshold a difference map at kappa x its peak in the box, and score that mask against
the exact mask (mean IoU with a 95% bootstrap interval over instances, as tools/eval_masks_gt_boxes.py
scores a model), beside the filled box. The difference is image - template (the template registered to
the image first by phase correlation, as INPUT.TEMPLATE.ALIGN does) or, without a template, image - its
own local median (--reference median). Choose kappa on the validation split (the default dataset).
The weak-mask table (tools/weak_mask_table.py) records the same numbers as its network-free rows.

    python tools/template_difference_masks.py --kappa 0.3 0.4 0.5
    python tools/template_difference_masks.py --reference median --kappa 0.3 0.5
    python tools/template_difference_masks.py --datasets synthetic_fabric_test --blur 0
"""
import argparse

from tabulate import tabulate

import defect_det  # noqa: F401
from detectron2.data import DatasetCatalog

from defect_det.weak_mask.difference_masks import REFERENCES, difference_mask_ious
from defect_det.weak_mask.evaluation import iou_summary


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["synthetic_fabric_val"])
    p.add_argument("--kappa", type=float, nargs="+", default=[0.4])
    p.add_argument("--reference", choices=REFERENCES, default="template")
    p.add_argument("--blur", type=float, default=1.5, help="Gaussian sigma (px) on the difference; 0 = none")
    p.add_argument("--median-size", type=int, default=15, help="median filter size (px) of --reference median")
    args = p.parse_args(argv)
    bad = [k for k in args.kappa if not 0.0 < k <= 1.0]
    if bad:
        raise SystemExit(f"--kappa must be in (0, 1], got {bad}")
    rows = []
    for name in args.datasets:
        try:
            ious = difference_mask_ious(DatasetCatalog.get(name), args.kappa, args.reference, args.blur,
                                        args.median_size)
        except ValueError as e:
            raise SystemExit(f"{name}: {e}") from None
        for key, v in ious.items():
            s = iou_summary(v)
            rows.append([name, key, s["instances"], f"{100 * s['mIoU']:.1f} [{100 * s['mIoU_ci_low']:.1f}, "
                                                    f"{100 * s['mIoU_ci_high']:.1f}]"])
    print(f"mask IoU on the GT boxes, reference {args.reference}, difference blurred by {args.blur:g} px")
    print(tabulate(rows, headers=["dataset", "mask", "instances", "mIoU % [95% CI]"], tablefmt="pipe"))
    return rows


if __name__ == "__main__":
    main()
