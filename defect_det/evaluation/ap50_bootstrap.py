"""
Bootstrap confidence interval over test images for COCO box AP50.

The detections are matched to the ground truth once (pycocotools ``COCOeval.evaluate()`` at IoU 0.5,
area "all"); a bootstrap replicate then only re-weights the test images (an image drawn twice counts
twice, with its ground truth and its detections) and re-accumulates COCO's 101-point interpolated
precision from those fixed matches. With every weight 1 this is exactly COCO's AP50.

Cost: the matching is one ``COCOeval.evaluate()`` at a single IoU threshold and area range; a
replicate then costs two small matrix products (image weights x per-image cumulative true / false
positive counts at each true positive) and work linear in the true positives. Measured on one busy
CPU core (numpy, OMP_NUM_THREADS=1), 300 images x 14 classes, 100 detections per image (30k
detections, 573 ground-truth boxes): 1000 replicates take 0.46 s class-aware and 0.10 s
class-agnostic, after a matching of 2.7 s / 1.4 s (pycocotools' full evaluate + accumulate of the
same detections: 5.7 s).
"""
import contextlib
import copy
import io
import math
import statistics

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval, Params

__all__ = [
    "AP50Matches",
    "bootstrap_ap50",
    "bootstrap_counts",
    "bootstrap_interval",
    "merge_categories",
]

# COCO's recall thresholds 0:0.01:1 (101 points), exactly as pycocotools builds them
_REC_THRS = Params(iouType="bbox").recThrs
# COCO's area range "all"
_AREA_ALL = [0.0, 1e5 ** 2]
# elements of one work array, (replicates x true positives) or (images x true positives): bounds memory
_CHUNK_ELEMENTS = 1 << 22


def merge_categories(coco_gt, coco_results):
    """
    Ground truth and detections with every category merged into one (id 1, "defect"): the
    class-agnostic view of :func:`defect_det.evaluation.coco_ap50.class_agnostic_ap50`.

    Args:
        coco_gt (COCO): the dataset's ground truth.
        coco_results (list[dict]): COCO-format detections; not modified.

    Returns:
        (COCO or None, list[dict]): the merged ground truth (None when the dataset has no
        annotation) and copies of the detections with ``category_id`` 1, in the same order.
    """
    data = copy.deepcopy(coco_gt.dataset)
    anns = data.get("annotations") or []
    dts = [dict(r, category_id=1) for r in coco_results]
    if not anns:
        return None, dts
    for a in anns:
        a["category_id"] = 1
    data["categories"] = [{"id": 1, "name": "defect"}]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = data
        gt.createIndex()
    return gt, dts


class _ClassMatches:
    """
    The detections of one category in COCO's accumulation order (score descending, ties in image
    order), reduced to what the precision/recall curve needs. N images, P true positives, F false
    positives (detections that COCO ignores are dropped: they never move the curve).

    Attributes:
        num_gt (ndarray[int64], shape (N,)): non-ignored ground-truth boxes per image.
        tp_image (ndarray[int64], shape (P,)): image index of each true positive, in rank order.
        fp_image (ndarray[int64], shape (F,)): image index of each false positive.
        fp_tps_before (ndarray[int64], shape (F,)): true positives ranked before each false positive.
    """

    def __init__(self, num_gt, tp_image, fp_image, fp_tps_before):
        self.num_gt = num_gt
        self.tp_image = tp_image
        self.fp_image = fp_image
        self.fp_tps_before = fp_tps_before

    def _cumulative(self, counts):
        """
        Weighted true / false positives ranked at or before every true positive.

        A rank's cumulative count is linear in the image weights: ``tp_cum = counts @ T`` and
        ``fp_cum = counts @ F`` with T[i, j] (F[i, j]) the true (false) positives of image i ranked
        at or before true positive j. T and F are built in blocks of columns (memory N x block).

        Args:
            counts (ndarray[float64], shape (B, N)): image weights.

        Returns:
            (ndarray[int64], ndarray[int64]): tp_cum and fp_cum, each of shape (B, P).
        """
        N, P = counts.shape[1], self.tp_image.size
        tp_cum = np.empty((counts.shape[0], P), dtype=np.int64)
        fp_cum = np.empty((counts.shape[0], P), dtype=np.int64)
        block = max(1, _CHUNK_ELEMENTS // max(N, 1))
        tp_carry = np.zeros(N)
        fp_carry = np.zeros(N)
        for j0 in range(0, P, block):
            j1 = min(P, j0 + block)
            w = j1 - j0
            cols = np.arange(w)
            T = np.zeros((N, w))
            T[self.tp_image[j0:j1], cols] = 1.0
            T = np.cumsum(T, axis=1) + tp_carry[:, None]
            # a false positive with k true positives before it is ranked before true positive k
            sel = (self.fp_tps_before >= j0) & (self.fp_tps_before < j1)
            F = np.bincount(self.fp_image[sel] * w + (self.fp_tps_before[sel] - j0), minlength=N * w)
            F = np.cumsum(F.reshape(N, w), axis=1) + fp_carry[:, None]
            tp_cum[:, j0:j1] = np.rint(counts @ T)
            fp_cum[:, j0:j1] = np.rint(counts @ F)
            tp_carry, fp_carry = T[:, -1], F[:, -1]
        return tp_cum, fp_cum

    def ap50(self, counts):
        """
        Args:
            counts (ndarray[int64], shape (B, N)): weight of every image in each of B replicates.

        Returns:
            ndarray[float64], shape (B,): AP50 in [0, 1] per replicate, NaN where the replicate has
            no ground truth of this category.
        """
        B = counts.shape[0]
        npig = counts @ self.num_gt  # (B,)
        ap = np.full(B, np.nan)
        has_gt = npig > 0
        if not has_gt.any():
            return ap
        ap[has_gt] = 0.0
        if self.tp_image.size == 0:
            return ap
        counts, npig = counts[has_gt], npig[has_gt]
        b = counts.shape[0]
        tp_cum, fp_cum = self._cumulative(counts.astype(np.float64))  # (b, P)
        # precision, then COCO's envelope (max of the precision at this rank or any later one). The
        # curve between true positives only falls, so its envelope is the one over true positives.
        precision = tp_cum / (tp_cum + fp_cum + np.spacing(1))
        envelope = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
        # COCO takes, for every recall threshold r, the first rank whose recall tp / npig >= r (as a
        # float division); `need` is that least true-positive count, found exactly in integers.
        n = npig[:, None].astype(np.float64)
        need = np.ceil(_REC_THRS[None, :] * n).astype(np.int64)  # (b, R)
        while True:
            down = (need > 0) & ((need - 1) / n >= _REC_THRS)
            if not down.any():
                break
            need -= down
        while True:
            up = need / n < _REC_THRS
            if not up.any():
                break
            need += up
        reached = need <= tp_cum[:, -1:]  # recall thresholds the curve reaches, else precision 0
        # first rank j with tp_cum[j] >= need, for all rows at once: rows offset into one sorted array
        offset = (np.arange(b, dtype=np.int64) * (int(tp_cum[:, -1].max()) + 1))[:, None]
        pos = np.searchsorted((tp_cum + offset).ravel(), (np.minimum(need, tp_cum[:, -1:]) + offset).ravel())
        q = np.where(reached.ravel(), envelope.ravel()[pos], 0.0).reshape(need.shape)
        ap[has_gt] = q.mean(axis=1)
        return ap


class AP50Matches:
    """
    Per-image matching of detections to ground truth at IoU 0.5 (COCO rules, area "all", at most
    ``max_dets`` detections per image and category), from which the AP50 of any re-weighting of the
    test images is accumulated. Build it with :meth:`from_coco`.

    Attributes:
        image_ids (list[int]): the N test images, in COCO's order (sorted ids).
        class_agnostic (bool): whether the categories were merged into one.
    """

    def __init__(self, image_ids, classes, class_agnostic=False):
        self.image_ids = list(image_ids)
        self.class_agnostic = class_agnostic
        self._classes = classes

    @property
    def num_images(self):
        return len(self.image_ids)

    @classmethod
    def from_coco(cls, coco_gt, coco_results, class_agnostic=False, max_dets=100, img_ids=None):
        """
        Args:
            coco_gt (COCO): the dataset's ground truth.
            coco_results (list[dict]): COCO-format detections (``image_id``, ``category_id`` as in
                ``coco_gt``, ``bbox`` XYWH, ``score``); not modified.
            class_agnostic (bool): merge every category into one (:func:`merge_categories`).
            max_dets (int): detections kept per image and category (COCOeval's last maxDets).
            img_ids (list[int] or None): evaluate on these images only (default: all of
                ``coco_gt``), as Detectron2's ``COCOEvaluator.evaluate(img_ids)``.
        """
        results = [
            {"image_id": r["image_id"], "category_id": r["category_id"], "bbox": list(r["bbox"]),
             "score": r["score"]}
            for r in coco_results
        ]
        if class_agnostic:
            merged, results = merge_categories(coco_gt, results)
            if merged is None:  # no ground truth at all: AP50 is NaN
                ids = sorted(set(img_ids if img_ids is not None else coco_gt.getImgIds()))
                return cls(ids, [], class_agnostic)
            coco_gt = merged
        with contextlib.redirect_stdout(io.StringIO()):
            if results:
                coco_dt = coco_gt.loadRes(results)
            else:  # loadRes cannot take an empty list
                coco_dt = COCO()
                coco_dt.dataset = {"images": list(coco_gt.dataset.get("images", [])),
                                   "categories": copy.deepcopy(coco_gt.dataset.get("categories", [])),
                                   "annotations": []}
                coco_dt.createIndex()
            e = COCOeval(coco_gt, coco_dt, "bbox")
            p = e.params
            if img_ids is not None:
                p.imgIds = list(img_ids)
            p.iouThrs = np.array([0.5])
            p.areaRng = [_AREA_ALL]
            p.areaRngLbl = ["all"]
            p.maxDets = [max_dets]
            e.evaluate()
        image_ids = [int(i) for i in e.params.imgIds]  # sorted, unique
        N = len(image_ids)
        classes = []
        for k in range(len(e.params.catIds)):
            num_gt = np.zeros(N, dtype=np.int64)
            scores, is_tp, image = [], [], []
            for i in range(N):
                ev = e.evalImgs[k * N + i]  # one area range: index (category, image)
                if ev is None:
                    continue
                num_gt[i] = int(np.count_nonzero(np.asarray(ev["gtIgnore"]) == 0))
                kept = ~np.asarray(ev["dtIgnore"][0], dtype=bool)
                scores.append(np.asarray(ev["dtScores"], dtype=np.float64)[kept])
                is_tp.append(np.asarray(ev["dtMatches"][0])[kept] > 0)
                image.append(np.full(int(kept.sum()), i, dtype=np.int64))
            if not num_gt.any():
                continue  # COCO leaves the category out of the mean
            if scores:
                scores, is_tp, image = np.concatenate(scores), np.concatenate(is_tp), np.concatenate(image)
            else:
                scores, is_tp, image = np.zeros(0), np.zeros(0, bool), np.zeros(0, np.int64)
            order = np.argsort(-scores, kind="mergesort")  # COCO's order, ties in image order
            is_tp, image = is_tp[order], image[order]
            tps_before = np.cumsum(is_tp)[~is_tp].astype(np.int64)
            classes.append(_ClassMatches(num_gt, image[is_tp], image[~is_tp], tps_before))
        return cls(image_ids, classes, class_agnostic)

    def ap50(self, counts=None):
        """
        AP50 in percent of the test images weighted by ``counts``: the mean over the categories with
        ground truth (after weighting) of COCO's 101-point interpolated AP at IoU 0.5.

        Args:
            counts (ndarray[int], shape (B, N) or None): how many times each image is drawn in each of
                B replicates (:func:`bootstrap_counts`). None: every image once (the point estimate).

        Returns:
            ndarray[float64], shape (B,) (a float when ``counts`` is None): AP50 in percent, NaN
            where there is no ground truth.
        """
        single = counts is None
        if single:
            counts = np.ones((1, self.num_images), dtype=np.int64)
        counts = np.asarray(counts, dtype=np.int64)
        if counts.ndim != 2 or counts.shape[1] != self.num_images:
            raise ValueError(f"counts must have shape (B, {self.num_images}), got {counts.shape}")
        B = counts.shape[0]
        total = np.zeros(B)
        n_classes = np.zeros(B, dtype=np.int64)
        width = max([c.tp_image.size for c in self._classes] + [_REC_THRS.size])
        step = max(1, _CHUNK_ELEMENTS // width)  # replicates per chunk: (step, P) work arrays
        for start in range(0, B, step):
            chunk = counts[start : start + step]
            for c in self._classes:
                ap = c.ap50(chunk)
                ok = ~np.isnan(ap)
                total[start : start + step] += np.where(ok, ap, 0.0)
                n_classes[start : start + step] += ok
        out = np.full(B, np.nan)
        has = n_classes > 0
        out[has] = total[has] / n_classes[has] * 100.0
        return float(out[0]) if single else out


def bootstrap_counts(num_images, n_boot, seed=0):
    """
    Bootstrap draws of the test images: ``num_images`` images drawn with replacement, ``n_boot``
    times. The same (num_images, n_boot, seed) always gives the same draws, so AP50 and class-agnostic
    AP50 intervals computed from one call are paired (same resampled image sets).

    Returns:
        ndarray[int64], shape (n_boot, num_images): how many times each image is drawn; rows sum to
        ``num_images``.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    if num_images == 0:
        return np.zeros((n_boot, 0), dtype=np.int64)
    return rng.multinomial(num_images, np.full(num_images, 1.0 / num_images), size=n_boot).astype(np.int64)


def bootstrap_interval(matches, n_boot=1000, seed=0, confidence=0.95, counts=None):
    """
    Bias-corrected percentile bootstrap interval (Efron's BC) of AP50 over the test images of
    ``matches``. AP50's bootstrap distribution is not centred on the estimate (resampling favours
    class-averaged AP: on a 150-image validation set the replicates' mean was 2.6 points above the
    point estimate), so the plain 2.5 / 97.5 percentiles would be shifted up. BC moves the percentiles
    by the measured median bias: with ``z0 = Phi^-1(share of replicates below the estimate)``, the
    bounds are the ``Phi(2 z0 -/+ z_(1-alpha/2))`` quantiles of the replicates (z0 = 0: the plain
    percentile interval).

    Args:
        matches (AP50Matches): the matched detections.
        n_boot (int): number of replicates (ignored when ``counts`` is given).
        seed (int): seed of the image draws.
        confidence (float): coverage of the two-sided interval (0.95: 2.5th and 97.5th percentiles).
        counts (ndarray[int], shape (B, N) or None): draws to use instead of
            ``bootstrap_counts(N, n_boot, seed)``.

    Returns:
        (float, float, float): point estimate (COCO AP50), low, high, in percent. Replicates without
        any ground truth (only defect-free images drawn) are left out; NaN when none is left.
    """
    point = matches.ap50()
    if math.isnan(point):
        return point, float("nan"), float("nan")
    if counts is None:
        counts = bootstrap_counts(matches.num_images, n_boot, seed)
    aps = matches.ap50(counts)
    aps = aps[~np.isnan(aps)]
    if aps.size == 0:
        return point, float("nan"), float("nan")
    normal = statistics.NormalDist()
    # share of replicates below the estimate (ties count half), kept inside (0, 1)
    share = (np.sum(aps < point) + 0.5 * np.sum(aps == point)) / aps.size
    share = min(max(share, 0.5 / aps.size), 1.0 - 0.5 / aps.size)
    z0 = normal.inv_cdf(share)
    z = normal.inv_cdf(0.5 + confidence / 2.0)
    q_low, q_high = normal.cdf(2.0 * z0 - z) * 100.0, normal.cdf(2.0 * z0 + z) * 100.0
    low, high = np.percentile(aps, [q_low, q_high])
    return point, float(low), float(high)


def bootstrap_ap50(coco_gt, coco_results, n_boot=1000, seed=0, class_agnostic=False, max_dets=100,
                   img_ids=None, confidence=0.95):
    """
    COCO box AP50 with a bias-corrected percentile bootstrap confidence interval over the test images (images drawn
    with replacement; a duplicated image counts twice). The matching is computed once; each
    replicate re-accumulates the precision/recall curve and averages the per-category AP50 over the
    categories with ground truth in that replicate (see the module docstring for the cost).

    Args:
        coco_gt (COCO): the dataset's ground truth.
        coco_results (list[dict]): COCO-format detections (``image_id``, ``category_id``, ``bbox``,
            ``score``); not modified.
        n_boot (int): number of bootstrap replicates (>= 1).
        seed (int): seed of the image draws (same seed and image count: same draws).
        class_agnostic (bool): every category merged into one; the point estimate is then
            :func:`defect_det.evaluation.coco_ap50.class_agnostic_ap50`.
        max_dets (int): detections per image and category (COCOeval's last maxDets).
        img_ids (list[int] or None): evaluate on these images only (default: all of ``coco_gt``).
        confidence (float): coverage of the interval.

    Returns:
        (float, float, float): AP50, interval low, interval high, in percent (NaN without ground truth).
    """
    matches = AP50Matches.from_coco(coco_gt, coco_results, class_agnostic, max_dets, img_ids)
    return bootstrap_interval(matches, n_boot, seed, confidence)
