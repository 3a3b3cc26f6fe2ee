"""Thresholds that mean something (issue 15): what ``tools/calibrate.py`` runs.

On a labelled split (a registered dataset), a trained model's outputs give

- an **image-level** score per image — the highest detection score (detectors) or the image score
  (SegDecNet) — against the image label (defective = has a box / label 1): AUROC and average precision, the
  same metric for detectors and SegDecNet; the OK/NG threshold that keeps at least a **target defect recall**
  (factories fix the escape rate: ``--recall 0.99``) and the one with the best F1;
- a **per-class** score threshold for detectors (the best F1 of that class's detections, matched greedily in
  decreasing score to unmatched boxes of the class at IoU >= 0.5);
- a **confusion matrix** with background (rows: true class, or background for a detection matching no box;
  columns: predicted class at its class threshold, or background for a missed box);
- the false-negative and false-positive images at the chosen threshold.

:func:`calibrate` writes ``thresholds.json`` (read by ``tools/predict.py --thresholds``) and PNG plots
(image-level PR and ROC curves, per-class PR curves, the confusion matrix) to the output folder.
"""
import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["average_precision", "auroc", "best_f1_threshold", "calibrate", "class_thresholds", "confusion_matrix", "get_parser", "main",
           "load_thresholds", "match_detections", "threshold_for_recall"]


def _pr(scores: np.ndarray, labels: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall at each distinct threshold (scores sorted decreasing): (P, R, thresholds)."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order].astype(float)
    tp, fp = np.cumsum(y), np.cumsum(1 - y)
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # the last index of each distinct score
    pos = max(y.sum(), 1.0)
    return tp[last] / (tp[last] + fp[last]), tp[last] / pos, s[last]


def average_precision(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Area under the precision-recall curve as the sum of precision x recall increments (step-wise, no
    interpolation); NaN without positives."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, int)
    if labels.sum() == 0:
        return float("nan")
    p, r, _ = _pr(scores, labels)
    return float(np.sum(np.diff(np.r_[0.0, r]) * p))


def auroc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Probability that a random positive scores above a random negative (ties count half); NaN when one
    class is absent."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, int)
    pos, neg = scores[labels == 1], scores[labels == 0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def threshold_for_recall(scores: Sequence[float], labels: Sequence[int], recall: float) -> Dict[str, float]:
    """The highest threshold t such that the images scoring >= t hold at least ``recall`` of the positives;
    returns ``{"threshold", "recall", "precision", "false_positive_rate"}`` at t."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, int)
    if not 0.0 < recall <= 1.0:
        raise ValueError(f"--recall must be in (0, 1], got {recall}")
    if labels.sum() == 0:
        raise ValueError("no defective image in the calibration split: a recall target is undefined")
    p, r, t = _pr(scores, labels)
    i = int(np.argmax(r >= recall - 1e-12))
    return _at(scores, labels, float(t[i]))


def best_f1_threshold(scores: Sequence[float], labels: Sequence[int]) -> Dict[str, float]:
    """The threshold with the best F1 (the highest of equals), with its recall, precision and F1."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, int)
    p, r, t = _pr(scores, labels)
    f1 = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-12), 0.0)
    out = _at(scores, labels, float(t[int(np.argmax(f1))]))
    out["f1"] = float(f1.max())
    return out


def _at(scores, labels, t) -> Dict[str, float]:
    ng = scores >= t
    tp, fp = int((ng & (labels == 1)).sum()), int((ng & (labels == 0)).sum())
    pos, neg = int((labels == 1).sum()), int((labels == 0).sum())
    return {"threshold": t, "recall": tp / max(pos, 1), "precision": tp / max(tp + fp, 1),
            "false_positive_rate": fp / max(neg, 1)}


def _iou_xyxy(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, 4) x (m, 4) -> (n, m)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: np.clip(x[:, 2:] - x[:, :2], 0, None).prod(-1)  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def match_detections(images: List[dict], num_classes: int, iou: float = 0.5) -> Dict[int, Tuple[np.ndarray, np.ndarray, int]]:
    """Per class: (scores of its detections, 1 where a detection matched an unmatched box of the class at IoU >=
    ``iou`` taken in decreasing score, number of boxes). ``images``: ``{"gt_boxes" (g, 4) XYXY, "gt_classes"
    (g,), "boxes" (d, 4), "scores" (d,), "classes" (d,)}``."""
    out = {}
    for c in range(num_classes):
        scores, hits, n_gt = [], [], 0
        for im in images:
            g = im["gt_boxes"][im["gt_classes"] == c]
            n_gt += len(g)
            sel = im["classes"] == c
            d, s = im["boxes"][sel], im["scores"][sel]
            order = np.argsort(-s, kind="stable")
            used = np.zeros(len(g), bool)
            ious = _iou_xyxy(d[order], g) if len(g) and len(d) else np.zeros((len(d), len(g)))
            for k, j in enumerate(order):
                hit = 0
                if len(g):
                    cand = np.where(~used & (ious[k] >= iou))[0]
                    if len(cand):
                        used[cand[np.argmax(ious[k][cand])]] = True
                        hit = 1
                scores.append(float(s[j]))
                hits.append(hit)
        out[c] = (np.asarray(scores), np.asarray(hits, int), n_gt)
    return out


def class_thresholds(matches: Dict[int, Tuple[np.ndarray, np.ndarray, int]]) -> Dict[int, Optional[float]]:
    """Per class the score threshold of the best F1 of its detections (recall over its boxes); None for a
    class without boxes or without a matched detection."""
    out = {}
    for c, (s, hit, n_gt) in matches.items():
        if n_gt == 0 or hit.sum() == 0:
            out[c] = None
            continue
        order = np.argsort(-s, kind="stable")
        tp = np.cumsum(hit[order])
        prec, rec = tp / np.arange(1, len(s) + 1), tp / n_gt
        f1 = np.where(prec + rec > 0, 2 * prec * rec / np.maximum(prec + rec, 1e-12), 0.0)
        out[c] = float(s[order][int(np.argmax(f1))])
    return out


def confusion_matrix(images: List[dict], num_classes: int, thresholds: Dict[int, Optional[float]],
                     iou: float = 0.5) -> np.ndarray:
    """(K + 1, K + 1) counts, rows = true class (K = background: a detection on no box), columns = predicted
    class (K = background: a box no kept detection overlaps). Kept detections: score >= their class threshold
    (classes without one keep none). Each box takes the best-IoU kept detection (IoU >= ``iou``), each
    detection at most one box."""
    k = num_classes
    m = np.zeros((k + 1, k + 1), int)
    for im in images:
        keep = np.array([thresholds.get(int(c)) is not None and s >= thresholds[int(c)]
                         for c, s in zip(im["classes"], im["scores"])], bool)
        d, dc = im["boxes"][keep], im["classes"][keep]
        used = np.zeros(len(d), bool)
        ious = _iou_xyxy(im["gt_boxes"], d) if len(d) and len(im["gt_boxes"]) else np.zeros((len(im["gt_boxes"]), len(d)))
        for g, gc in enumerate(im["gt_classes"]):
            cand = np.where(~used & (ious[g] >= iou))[0] if len(d) else np.zeros(0, int)
            if len(cand):
                j = cand[np.argmax(ious[g][cand])]
                used[j] = True
                m[int(gc), int(dc[j])] += 1
            else:
                m[int(gc), k] += 1
        for j in np.where(~used)[0]:
            m[k, int(dc[j])] += 1
    return m


def _plots(out_dir, scores, labels, matches, class_names, matrix):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p, r, _ = _pr(np.asarray(scores, float), np.asarray(labels, int))
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot(r, p)
    ax.set(xlabel="recall (defective images)", ylabel="precision", title="image-level PR", xlim=(0, 1), ylim=(0, 1.02))
    fig.savefig(os.path.join(out_dir, "image_pr.png"), dpi=100, bbox_inches="tight")
    plt.close(fig)
    s, y = np.asarray(scores, float), np.asarray(labels, int)
    ts = np.r_[np.inf, np.unique(s)[::-1]]
    tpr = [((s >= t) & (y == 1)).sum() / max((y == 1).sum(), 1) for t in ts]
    fpr = [((s >= t) & (y == 0)).sum() / max((y == 0).sum(), 1) for t in ts]
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot(fpr, tpr)
    ax.plot([0, 1], [0, 1], ":", color="gray")
    ax.set(xlabel="false positive rate (OK images)", ylabel="recall (defective images)", title="image-level ROC")
    fig.savefig(os.path.join(out_dir, "image_roc.png"), dpi=100, bbox_inches="tight")
    plt.close(fig)
    if matches:
        fig, ax = plt.subplots(figsize=(6, 5))
        for c, (sc, hit, n_gt) in matches.items():
            if n_gt == 0 or len(sc) == 0:
                continue
            order = np.argsort(-sc, kind="stable")
            tp = np.cumsum(hit[order])
            ax.plot(tp / n_gt, tp / np.arange(1, len(sc) + 1), label=class_names[c], lw=1)
        ax.set(xlabel="recall", ylabel="precision", title="per-class PR (IoU 0.5)", xlim=(0, 1), ylim=(0, 1.02))
        ax.legend(fontsize=6, loc="lower left")
        fig.savefig(os.path.join(out_dir, "class_pr.png"), dpi=100, bbox_inches="tight")
        plt.close(fig)
    if matrix is not None:
        names = list(class_names) + ["background"]
        fig, ax = plt.subplots(figsize=(0.45 * len(names) + 2, 0.45 * len(names) + 2))
        ax.imshow(np.log1p(matrix), cmap="Blues")
        for i in range(len(names)):
            for j in range(len(names)):
                if matrix[i, j]:
                    ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=6)
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
        ax.set_yticks(range(len(names)), names, fontsize=6)
        ax.set(xlabel="predicted", ylabel="true", title="confusion matrix (class thresholds)")
        fig.savefig(os.path.join(out_dir, "confusion_matrix.png"), dpi=100, bbox_inches="tight")
        plt.close(fig)


def calibrate(predictor, dataset_name: str, out_dir: str, recall: float = 0.99, batch_size: int = 4,
              config_file: str = "", weights: str = "") -> dict:
    """Run ``predictor`` (:class:`~defect_det.inference.DefectPredictor`) on every image of the registered
    dataset ``dataset_name`` and write ``thresholds.json`` and the plots of the module doc to ``out_dir``;
    returns the JSON content."""
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.structures import BoxMode

    dicts = DatasetCatalog.get(dataset_name)
    if not dicts:
        raise ValueError(f"dataset {dataset_name!r} is empty")
    class_names = list(MetadataCatalog.get(dataset_name).get("thing_classes", []))
    images, scores, labels, names = [], [], [], []
    for i in range(0, len(dicts), batch_size):
        batch = dicts[i:i + batch_size]
        templates = [d.get("template_file_name") for d in batch]
        outs = predictor([d["file_name"] for d in batch], templates if any(templates) else None)
        for d, out in zip(batch, outs):
            anns = [a for a in d.get("annotations", []) if not a.get("iscrowd", 0)]
            label = int(d.get("label", 1 if anns else 0))
            names.append(d["file_name"])
            labels.append(label)
            if "instances" not in out:  # SegDecNet
                scores.append(float(out["score"]))
                continue
            inst = out["instances"].to("cpu")
            s = inst.scores.numpy()
            scores.append(float(s.max()) if len(s) else 0.0)
            gt = np.array([BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in anns], float).reshape(-1, 4)
            images.append({"gt_boxes": gt, "gt_classes": np.array([a["category_id"] for a in anns], int),
                           "boxes": inst.pred_boxes.tensor.numpy(), "scores": s, "classes": inst.pred_classes.numpy()})
    scores_a, labels_a = np.asarray(scores), np.asarray(labels)
    result = {"dataset": dataset_name, "images": len(names), "defective": int(labels_a.sum()),
              "config": config_file, "weights": weights, "image_auroc": auroc(scores_a, labels_a),
              "image_ap": average_precision(scores_a, labels_a), "target_recall": recall,
              "at_target_recall": threshold_for_recall(scores_a, labels_a, recall),
              "best_f1": best_f1_threshold(scores_a, labels_a)}
    result["image_threshold"] = result["at_target_recall"]["threshold"]
    matches, matrix = None, None
    if images:
        k = len(class_names) or int(max([im["classes"].max(initial=0) for im in images] + [0]) + 1)
        class_names = class_names or [str(c) for c in range(k)]
        matches = match_detections(images, k)
        thr = class_thresholds(matches)
        result["class_thresholds"] = {class_names[c]: t for c, t in thr.items()}
        matrix = confusion_matrix(images, k, thr)
        result["confusion_matrix"] = {"labels": class_names + ["background"], "counts": matrix.tolist()}
    t = result["image_threshold"]
    result["false_negative_images"] = [n for n, s, y in zip(names, scores, labels) if y == 1 and s < t]
    result["false_positive_images"] = [n for n, s, y in zip(names, scores, labels) if y == 0 and s >= t]
    os.makedirs(out_dir, exist_ok=True)
    _plots(out_dir, scores, labels, matches, class_names, matrix)
    with open(os.path.join(out_dir, "thresholds.json"), "w") as f:
        json.dump(result, f, indent=1)
    return result


def load_thresholds(path: str) -> dict:
    """``thresholds.json`` of :func:`calibrate` -> ``{"image": float, "classes": {name: float or None}}``;
    errors name the file and the missing key."""
    with open(path) as f:
        data = json.load(f)
    if "image_threshold" not in data:
        raise ValueError(f"{path}: no 'image_threshold' (write it with tools/calibrate.py)")
    return {"image": float(data["image_threshold"]), "classes": dict(data.get("class_thresholds", {}))}


def get_parser(description=None):
    import argparse

    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, metavar="FILE", help="the model's config")
    p.add_argument("--dataset", required=True, help="a registered, labelled dataset (e.g. synthetic_fabric_val)")
    p.add_argument("--output", required=True, metavar="DIR", help="thresholds.json and the plots")
    p.add_argument("--recall", type=float, default=0.99,
                   help="image-level defect recall the OK/NG threshold must keep (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides, e.g. MODEL.WEIGHTS model.pth")
    return p


def main(argv=None, description=None) -> dict:
    """Parse ``argv``, run :func:`calibrate`, print the chosen thresholds and the files written."""
    args = get_parser(description).parse_args(argv)
    import defect_det  # noqa: F401  (registers the datasets)
    from ..config import load_defect_cfg
    from .predictor import DefectPredictor

    cfg = load_defect_cfg(args.config_file, args.opts)
    if not cfg.MODEL.WEIGHTS:
        raise SystemExit("error: MODEL.WEIGHTS is empty: give the trained model (trailing MODEL.WEIGHTS model.pth)")
    res = calibrate(DefectPredictor(cfg), args.dataset, args.output, args.recall, args.batch_size,
                    args.config_file, cfg.MODEL.WEIGHTS)
    at = res["at_target_recall"]
    print(f"[calibrate] {res['images']} images ({res['defective']} defective): image AUROC {res['image_auroc']:.3f}, "
          f"AP {res['image_ap']:.3f}; OK/NG threshold {at['threshold']:.4f} keeps recall {at['recall']:.3f} "
          f"(precision {at['precision']:.3f}, {len(res['false_positive_images'])} false NG, "
          f"{len(res['false_negative_images'])} escapes) -> {os.path.join(args.output, 'thresholds.json')}")
    return res
