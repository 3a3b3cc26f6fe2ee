"""Image-level and pixel-level evaluation of surface-defect models (SegDecNet).

The model's outputs per image: ``{"score": image-level defect probability, "sem_seg": (1, H, W)
defect probability map}``; the ground truth comes from the mapped inputs: ``label`` (0/1) and, for
pixel metrics, ``sem_seg`` (the pixel label, resized to the output size with nearest neighbours).

Image level (fractions in [0, 1], computed here with numpy):

- ``AP``: average precision, ``sum_n (R_n - R_{n-1}) P_n`` over the distinct score thresholds
  (as ``sklearn.metrics.average_precision_score``);
- ``AUROC``: area under the ROC curve (Mann-Whitney statistic, ties count 1/2);
- ``detection_rate``: share of defective images scoring above the highest score of any normal
  image (the threshold at which no normal image is flagged);
- ``best_F1`` with ``FP`` / ``FN`` counts and ``threshold`` at the best-F1 threshold
  (``score >= threshold`` = defective);
- ``FP_at_no_FN``: normal images flagged at the lowest threshold that misses no defective image.

Pixel level (``PixelLevelEvaluator``): ``Dice`` and ``IoU`` of the map thresholded at
``MODEL.SEGDEC.PIXEL_THRESHOLD``, summed over all images with a pixel label.
``SegDecEvaluator`` (the one SegDecNet configs use) reports both, as tasks ``image`` and ``pixel``,
and saves the PR curve to ``<output_dir>/pr_curve.png``.
"""
import itertools
import logging
import os
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F

from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm

from .build import EVALUATOR_REGISTRY

__all__ = [
    "ImageLevelEvaluator",
    "PixelLevelEvaluator",
    "SegDecEvaluator",
    "average_precision",
    "auroc",
    "image_level_metrics",
    "precision_recall_curve",
    "save_pr_curve",
]

logger = logging.getLogger(__name__)


def _check(scores, labels):
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel()
    if scores.shape != labels.shape:
        raise ValueError(f"{scores.size} scores but {labels.size} labels")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"labels must be 0/1, got {np.unique(labels).tolist()}")
    return scores, labels.astype(np.int64)


def precision_recall_curve(scores, labels):
    """Precision and recall at every distinct threshold, highest first (the "score >= t" rule).

    Returns:
        (precision (T,), recall (T,), thresholds (T,))
    """
    scores, labels = _check(scores, labels)
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each distinct score
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    pos = max(int(labels.sum()), 1)
    return tp / (tp + fp), tp / pos, s[last]


def average_precision(scores, labels) -> float:
    """AP = sum (R_n - R_{n-1}) P_n over distinct thresholds; NaN without positives."""
    _, labels_ = _check(scores, labels)
    if labels_.sum() == 0:
        return float("nan")
    precision, recall, _ = precision_recall_curve(scores, labels)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def auroc(scores, labels) -> float:
    """P(score of a random positive > score of a random negative) + 1/2 P(equal); NaN if a class
    is missing."""
    scores, labels = _check(scores, labels)
    pos, neg = scores[labels == 1], scores[labels == 0]
    if not len(pos) or not len(neg):
        return float("nan")
    # average ranks (ties get the mean rank)
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    u = ranks[labels == 1].sum() - len(pos) * (len(pos) + 1) / 2.0
    return float(u / (len(pos) * len(neg)))


def image_level_metrics(scores, labels) -> "OrderedDict[str, float]":
    """Every image-level number of the module doc."""
    scores, labels = _check(scores, labels)
    pos, neg = scores[labels == 1], scores[labels == 0]
    out = OrderedDict()
    out["AP"] = average_precision(scores, labels)
    out["AUROC"] = auroc(scores, labels)
    top_normal = neg.max() if len(neg) else -np.inf
    out["detection_rate"] = float((pos > top_normal).mean()) if len(pos) else float("nan")
    if len(pos):
        precision, recall, thresholds = precision_recall_curve(scores, labels)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0)
        k = int(np.argmax(f1))
        t = thresholds[k]
        out["best_F1"] = float(f1[k])
        out["threshold"] = float(t)
        out["FP"] = float((neg >= t).sum())
        out["FN"] = float((pos < t).sum())
        out["FP_at_no_FN"] = float((neg >= pos.min()).sum())
    else:
        for k in ("best_F1", "threshold", "FP", "FN", "FP_at_no_FN"):
            out[k] = float("nan")
    out["num_images"] = float(len(scores))
    out["num_defective"] = float(len(pos))
    return out


def save_pr_curve(scores, labels, path, title=""):
    """Write the precision-recall curve as a PNG (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    precision, recall, _ = precision_recall_curve(scores, labels)
    fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
    ax.step(np.r_[0.0, recall], np.r_[1.0, precision], where="post")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1.01)
    ax.set_ylim(0, 1.01)
    ax.set_title(f"{title} AP={average_precision(scores, labels):.4f}".strip())
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


class _Gathering(DatasetEvaluator):
    def __init__(self, dataset_name, cfg=None, distributed=True, output_dir=None):
        self.dataset_name = dataset_name
        self._distributed = distributed
        self._output_dir = output_dir
        self._pixel_threshold = cfg.MODEL.SEGDEC.PIXEL_THRESHOLD if cfg is not None else 0.5
        self.reset()

    def reset(self):
        self._records = []

    def _gathered(self):
        if not self._distributed:
            return self._records
        comm.synchronize()
        parts = comm.gather(self._records, dst=0)
        return list(itertools.chain(*parts)) if comm.is_main_process() else None


@EVALUATOR_REGISTRY.register()
class ImageLevelEvaluator(_Gathering):
    """Image-level AP / AUROC / detection rate / best-F1 FP, FN (module doc); task ``image``."""

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            if "label" not in inp:
                raise ValueError(f"{self.__class__.__name__}: input {inp.get('file_name')} has no 'label'")
            self._records.append((float(out["score"]), int(inp["label"])))

    def evaluate(self):
        records = self._gathered()
        if records is None:
            return {}
        if not records:
            logger.warning(f"{self.dataset_name}: no predictions to evaluate")
            return {}
        scores, labels = (np.array(x) for x in zip(*records))
        metrics = image_level_metrics(scores, labels)
        if self._output_dir and labels.sum() > 0:
            save_pr_curve(scores, labels, os.path.join(self._output_dir, "pr_curve.png"), self.dataset_name)
        logger.info(f"{self.dataset_name} image level: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
        return OrderedDict([("image", metrics)])


@EVALUATOR_REGISTRY.register()
class PixelLevelEvaluator(_Gathering):
    """Dice / IoU of the thresholded defect maps against the pixel labels; task ``pixel``."""

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            if "sem_seg" not in inp:
                continue  # no pixel label (weakly labelled): not counted
            pred = out["sem_seg"][0].detach().float().cpu()
            gt = inp["sem_seg"].float()
            if gt.shape != pred.shape:
                gt = F.interpolate(gt[None, None], size=pred.shape, mode="nearest")[0, 0]
            p, g = pred >= self._pixel_threshold, gt > 0
            self._records.append((int((p & g).sum()), int((p & ~g).sum()), int((~p & g).sum())))

    def evaluate(self):
        records = self._gathered()
        if records is None:
            return {}
        tp, fp, fn = (float(sum(x)) for x in zip(*records)) if records else (0.0, 0.0, 0.0)
        denom = 2 * tp + fp + fn
        metrics = OrderedDict([
            ("Dice", 2 * tp / denom if denom else float("nan")),
            ("IoU", tp / (tp + fp + fn) if denom else float("nan")),
            ("num_images", float(len(records))),
        ])
        return OrderedDict([("pixel", metrics)])


@EVALUATOR_REGISTRY.register()
class SegDecEvaluator(DatasetEvaluator):
    """:class:`ImageLevelEvaluator` + :class:`PixelLevelEvaluator` (tasks ``image`` and ``pixel``)."""

    def __init__(self, dataset_name, cfg=None, distributed=True, output_dir=None):
        self._parts = [ImageLevelEvaluator(dataset_name, cfg, distributed, output_dir),
                       PixelLevelEvaluator(dataset_name, cfg, distributed, output_dir)]

    def reset(self):
        for p in self._parts:
            p.reset()

    def process(self, inputs, outputs):
        for p in self._parts:
            p.process(inputs, outputs)

    def evaluate(self):
        results = OrderedDict()
        for p in self._parts:
            results.update(p.evaluate() or {})
        return results
