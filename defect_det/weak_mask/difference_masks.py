"""
Network-free reference masks on the ground-truth boxes (projects/WeakMask/README.md): what thresholding
gives without any learning, for the weak-mask table to compare the learnt head against.

Inside each ground-truth box G, with a per-pixel difference map D (H, W) >= 0,

    mask = { p in G : D(p) >= kappa * max_(q in G) D(q) }

scored against the exact mask by IoU, as :func:`~defect_det.weak_mask.evaluation.masks_on_gt_boxes` scores a
model (mean over instances with a bootstrap interval, :func:`~defect_det.weak_mask.evaluation.iou_summary`).
Two references for D:

- ``template``: ``||I - T||_2`` over channels, T the template registered to the image first (phase
  correlation, as ``INPUT.TEMPLATE.ALIGN`` does), optionally Gaussian-blurred (``blur`` px). The cue the
  head's template-difference loss thresholds at the same kappa.
- ``median``: ``||I - median_k(I)||_2`` with a k x k median filter per channel (``median_size``): no template,
  the image against a local estimate of its own texture. What thresholding can do where no template exists
  (the PTG setting), where a learnt mask has to beat it.
"""
from typing import Dict, Iterable, List, Sequence

import cv2
import numpy as np
from detectron2.data import DatasetCatalog
from detectron2.structures import BoxMode

from ..data.template_ops import align_template
from .evaluation import annotation_mask, iou_summary, mask_iou

__all__ = ["REFERENCES", "difference_map", "difference_mask_ious", "difference_mask_metrics", "percent"]

REFERENCES = ("template", "median")


def _read(path: str, what: str, record: str) -> np.ndarray:
    img = cv2.imread(path)
    if img is None:
        raise ValueError(f"{record}: cannot read {what} {path!r}")
    return img.astype(np.float32)


def difference_map(record: Dict, reference: str = "template", blur: float = 1.5, median_size: int = 15) -> np.ndarray:
    """(H, W) float32 difference map D of one dataset dict (module doc). A ``template`` reference needs the
    record's ``template_file_name``: a missing one is a ValueError naming the image."""
    if reference not in REFERENCES:
        raise ValueError(f"reference must be one of {REFERENCES}, got {reference!r}")
    image = _read(record["file_name"], "image", record["file_name"])
    if reference == "template":
        if not record.get("template_file_name"):
            raise ValueError(f"{record['file_name']}: no template_file_name (the 'template' reference needs one; "
                             "use reference 'median' for data without templates)")
        template, _ = align_template(image, _read(record["template_file_name"], "template", record["file_name"]))
        ref = template.astype(np.float32)
    else:
        if median_size < 3 or median_size % 2 == 0:
            raise ValueError(f"median_size must be odd and >= 3, got {median_size}")
        ref = cv2.medianBlur(image.astype(np.uint8), median_size).astype(np.float32)
    diff = np.linalg.norm(image - ref, axis=2)
    if blur > 0:
        diff = cv2.GaussianBlur(diff, (0, 0), blur)
    return diff


def difference_mask_ious(dataset_dicts: Iterable[Dict], kappas: Sequence[float], reference: str = "template",
                         blur: float = 1.5, median_size: int = 15) -> Dict[str, List[float]]:
    """``{"filled box": [IoU ...], "kappa=<k>": [IoU ...]}`` over every annotation with a segmentation."""
    bad = [k for k in kappas if not 0.0 < k <= 1.0]
    if bad:
        raise ValueError(f"kappa must be in (0, 1], got {bad}")
    ious: Dict[str, List[float]] = {"filled box": [], **{f"kappa={k:g}": [] for k in kappas}}
    for d in dataset_dicts:
        anns = [a for a in d.get("annotations", []) if a.get("segmentation")]
        if not anns:
            continue
        diff = difference_map(d, reference, blur, median_size)
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


def difference_mask_metrics(dataset_names: Sequence[str], kappa: float, reference: str = "template",
                            blur: float = 1.5, median_size: int = 15) -> Dict[str, Dict[str, Dict[str, float]]]:
    """``{dataset: {"gt_boxes": {mIoU, mIoU_ci_low, mIoU_ci_high, IoU>=0.5, IoU>=0.75 (all in %), instances}}}``
    of the thresholded difference at ``kappa`` on each registered dataset: the metrics of a computed row of
    the weak-mask table, in the units of its trained rows."""
    out = {}
    for name in dataset_names:
        ious = difference_mask_ious(DatasetCatalog.get(name), [kappa], reference, blur, median_size)[f"kappa={kappa:g}"]
        out[name] = {"gt_boxes": percent(iou_summary(ious))}
    return out


def percent(summary: Dict[str, float]) -> Dict[str, float]:
    """An :func:`iou_summary` (fractions) with every share in % (counts unchanged)."""
    return {k: (v if k in ("instances", "skipped") else 100.0 * v) for k, v in summary.items()}
