"""Where a detector's AP goes (issue 11): what ``tools/detection_errors.py`` runs.

Every detection of a COCO results file is classified against the ground truth, per score threshold,
and the recall the detections could reach is reported. Per image, detections are taken in decreasing
score and each is, in this order of precedence:

- ``TP``: IoU >= 0.5 with a not yet matched box of its class (greedy, as COCO matching at IoU 0.5);
- ``duplicate``: IoU >= 0.5 with a box of its class that an earlier detection matched;
- ``wrong_cls``: IoU >= 0.5 with a box of another class only;
- ``poor_loc``: best IoU with any box in [0.1, 0.5): a fragment of a defect, or a box too large;
- ``bg``: best IoU < 0.1 (on an image with defects);
- ``bg_normal``: any detection on a defect-free image.

:func:`detection_errors` computes the counts, :func:`format_report` renders them as a markdown table,
:func:`get_parser` / :func:`main` are the command line.
"""
import argparse
import json
from collections import defaultdict
from typing import List, Optional, Sequence

import numpy as np

__all__ = ["KINDS", "detection_errors", "detections_per_gt", "format_report", "get_parser", "main"]

KINDS = ("TP", "duplicate", "wrong_cls", "poor_loc", "bg", "bg_normal")


def _iou(a, b):
    """IoU of two XYWH boxes (sequences of 4 numbers)."""
    iw = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def detections_per_gt(annotations: list, dets: list, score_thresh: float = 0.5, iou_thresh: float = 0.5) -> dict:
    """
    What NMS changes: how many detections each found defect gets.

    Args:
        annotations: COCO ground-truth annotations (``image_id``, ``category_id``, ``bbox`` XYWH; crowd ones
            are skipped).
        dets: COCO results (``image_id``, ``category_id``, ``bbox`` XYWH, ``score``).
        score_thresh: detections below this score are ignored (a production threshold, not AP's 0.05).
        iou_thresh: a detection "covers" a box of its class at this IoU or more.
    Returns:
        ``{"dets_per_gt": mean number of covering detections over the boxes covered at least once (1.0 =
        no duplicate), "dup_share": share of those boxes covered twice or more, "found": their number,
        "gts": number of boxes}`` (NaN means when no box is covered).
    """
    by_image = defaultdict(list)
    for d in dets:
        if d["score"] >= score_thresh:
            by_image[d["image_id"]].append(d)
    counts = []
    gts = [a for a in annotations if not a.get("iscrowd", 0)]
    for a in gts:
        n = sum(1 for d in by_image.get(a["image_id"], ())
                if d["category_id"] == a["category_id"] and _iou(d["bbox"], a["bbox"]) >= iou_thresh)
        if n:
            counts.append(n)
    nan = float("nan")
    return {"dets_per_gt": float(np.mean(counts)) if counts else nan,
            "dup_share": float(np.mean([c > 1 for c in counts])) if counts else nan,
            "found": len(counts), "gts": len(gts)}


def detection_errors(gt: dict, dets: list, thresholds=(0.0, 0.3, 0.5, 0.7)) -> dict:
    """
    Args:
        gt: a COCO annotation dict (images, annotations, categories; boxes XYWH).
        dets: COCO results, a list of N dicts (image_id, category_id, bbox XYWH, score).
        thresholds: score thresholds T of the counts and recalls.
    Returns:
        {"counts": {thr: {kind: n}}, "recall": {thr: {"any": r, "same_class": r}},
         "poor_loc_area_ratio": {class name: {"n", "median"}}, "boxes": n, "images": n}
    """
    names = {c["id"]: c["name"] for c in gt["categories"]}
    gts, dts = defaultdict(list), defaultdict(list)
    for a in gt["annotations"]:
        gts[a["image_id"]].append(a)
    for d in dets:
        dts[d["image_id"]].append(d)
    counts = {t: dict.fromkeys(KINDS, 0) for t in thresholds}
    found = {t: [0, 0] for t in thresholds}
    ratios = defaultdict(list)
    for img in gt["images"]:
        boxes = gts[img["id"]]
        used = set()
        best_any, best_same = {}, {}  # box index -> highest score of a detection at IoU >= 0.5
        for d in sorted(dts[img["id"]], key=lambda x: -x["score"]):
            ious = [_iou(b["bbox"], d["bbox"]) for b in boxes]
            same = [j for j, b in enumerate(boxes) if ious[j] >= 0.5 and b["category_id"] == d["category_id"]]
            for j, v in enumerate(ious):
                if v >= 0.5:
                    best_any.setdefault(j, d["score"])
            for j in same:
                best_same.setdefault(j, d["score"])
            free = [j for j in same if j not in used]
            if not boxes:
                kind = "bg_normal"
            elif free:
                used.add(free[0])
                kind = "TP"
            elif same:
                kind = "duplicate"
            elif max(ious) >= 0.5:
                kind = "wrong_cls"
            elif max(ious) >= 0.1:
                kind = "poor_loc"
                j = int(np.argmax(ious))
                b = boxes[j]["bbox"]
                if d["score"] >= 0.3:
                    ratios[names[boxes[j]["category_id"]]].append(d["bbox"][2] * d["bbox"][3] / max(b[2] * b[3], 1e-9))
            else:
                kind = "bg"
            for t in thresholds:
                if d["score"] >= t:
                    counts[t][kind] += 1
        for t in thresholds:
            found[t][0] += sum(1 for s in best_any.values() if s >= t)
            found[t][1] += sum(1 for s in best_same.values() if s >= t)
    n = len(gt["annotations"])
    return {
        "images": len(gt["images"]), "boxes": n, "counts": counts,
        "recall": {t: {"any": f[0] / max(n, 1), "same_class": f[1] / max(n, 1)} for t, f in found.items()},
        "poor_loc_area_ratio": {k: {"n": len(v), "median": float(np.median(v))} for k, v in sorted(ratios.items())},
    }


def format_report(r: dict) -> str:
    """The markdown form of a :func:`detection_errors` result: one table row per score threshold
    (count of every kind, both recalls), then the ``poor_loc`` area ratios per class."""
    lines = [f"{r['images']} images, {r['boxes']} boxes", "",
             "| score >= | " + " | ".join(KINDS) + " | recall (any class) | recall (its class) |",
             "|---" * (len(KINDS) + 3) + "|"]
    for t, c in r["counts"].items():
        rec = r["recall"][t]
        lines.append(f"| {t:g} | " + " | ".join(str(c[k]) for k in KINDS)
                     + f" | {rec['any']:.2f} | {rec['same_class']:.2f} |")
    if r["poor_loc_area_ratio"]:
        lines += ["", "poor_loc detections (score >= 0.3) by the class of the box they overlap: "
                      "median area detection / box (< 1: fragments)", ""]
        lines += [f"- {k}: {v['n']} detections, median ratio {v['median']:.2f}"
                  for k, v in r["poor_loc_area_ratio"].items()]
    return "\n".join(lines)


def get_parser(description: Optional[str] = None) -> argparse.ArgumentParser:
    """The command line of ``tools/detection_errors.py`` (``description``: its ``--help`` text)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("gt", help="COCO annotation json")
    p.add_argument("results", help="COCO results json (coco_instances_results.json)")
    p.add_argument("--thresholds", type=float, nargs="+", default=[0.0, 0.3, 0.5, 0.7])
    p.add_argument("--json", default=None, help="also write the report as JSON here")
    return p


def main(argv: Optional[Sequence[str]] = None, description: Optional[str] = None) -> dict:
    """Parse ``argv`` (default ``sys.argv[1:]``), classify the detections, print the report, optionally
    write it as JSON; returns the :func:`detection_errors` dict. Results naming an image that the
    annotation file lacks (a wrong split) raise ``SystemExit``."""
    args = get_parser(description).parse_args(argv)
    with open(args.gt) as f:
        gt = json.load(f)
    with open(args.results) as f:
        dets: List[dict] = json.load(f)
    known = {i["id"] for i in gt["images"]}
    unknown = sorted({d["image_id"] for d in dets} - known)
    if unknown:
        raise SystemExit(f"error: {args.results}: image_id {unknown[:5]} not in {args.gt} (wrong split?)")
    r = detection_errors(gt, dets, args.thresholds)
    print(format_report(r))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=1)
    return r
