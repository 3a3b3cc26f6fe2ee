"""COCO box evaluation with per-category AP50 (the RDDN paper reports mAP@0.5)."""
import contextlib
import io
import itertools
import math

import numpy as np
from pycocotools.cocoeval import COCOeval
from tabulate import tabulate

from detectron2.evaluation import COCOEvaluator

from .ap50_bootstrap import AP50Matches, bootstrap_counts, bootstrap_interval, merge_categories
from .build import EVALUATOR_REGISTRY
from .detection_errors import detections_per_gt

__all__ = [
    "DefectCOCOEvaluator",
    "class_agnostic_ap50",
    "per_category_ap50",
    "format_ap50_table",
    "format_summary_table",
    "normalize_test_results",
]


def per_category_ap50(coco_eval, class_names):
    """
    AP at IoU 0.5 per category from a summarized ``COCOeval``.

    ``coco_eval.eval["precision"]`` has shape (T iou thresholds, R recall points, K classes,
    A area ranges, M max-dets); IoU 0.5 is index 0, area "all" index 0, max-dets the last one.

    Returns:
        dict[str, float]: class name -> AP50 in percent (NaN if the class has no ground truth).
    """
    precision = coco_eval.eval["precision"]
    if precision.shape[2] != len(class_names):
        raise ValueError(
            f"COCOeval has {precision.shape[2]} categories but the dataset metadata "
            f"lists {len(class_names)} thing_classes"
        )
    out = {}
    for k, name in enumerate(class_names):
        p = precision[0, :, k, 0, -1]
        p = p[p > -1]
        out[name] = float(np.mean(p) * 100) if p.size else float("nan")
    return out


def class_agnostic_ap50(coco_gt, coco_results, max_dets=100):
    """
    Box AP at IoU 0.5 with every category merged into one ("is there a defect here?"), in percent.

    Every ground-truth box and every detection counts as the same class; a box detected under two
    classes is one true positive and one false positive, as in any class-agnostic COCO evaluation of
    a multi-class detector. NaN when there is no ground truth.

    Args:
        coco_gt (COCO): the dataset's ground truth.
        coco_results (list[dict]): COCO-format detections (``image_id``, ``bbox``, ``score``, ...).
    """
    gt, dts = merge_categories(coco_gt, coco_results)
    if gt is None:
        return float("nan")
    with contextlib.redirect_stdout(io.StringIO()):
        if not dts:
            return 0.0
        dt = gt.loadRes(dts)
        e = COCOeval(gt, dt, "bbox")
        e.params.maxDets = [1, 10, max_dets]
        e.evaluate()
        e.accumulate()
        e.summarize()
    return float(e.stats[1] * 100) if e.stats[1] >= 0 else float("nan")


def format_ap50_table(ap50_per_class, num_cols=3):
    """Pipe table of ``{class: AP50}`` with ``num_cols`` (class, AP50) pairs per row."""
    items = list(ap50_per_class.items())
    rows = []
    for i in range(0, len(items), num_cols):
        row = []
        for name, ap in items[i : i + num_cols]:
            row += [name, "n/a" if np.isnan(ap) else f"{ap:.1f}"]
        rows.append(row)
    return tabulate(rows, headers=["category", "AP50"] * num_cols, tablefmt="pipe", disable_numparse=True)


@EVALUATOR_REGISTRY.register()
class DefectCOCOEvaluator(COCOEvaluator):
    """
    Detectron2's :class:`COCOEvaluator` on boxes (and on masks, task ``segm``, when
    ``cfg.MODEL.MASK_ON``), which also returns ``AP50-<class>`` for every class and task (NaN for
    classes absent from the dataset's ground truth) and the box task's ``AP50_agnostic`` (all
    classes merged: did the detector find the defect at all?). Mask AP needs ground-truth
    ``segmentation`` in the dataset's COCO json (the synthetic fabric export has it).

    With ``cfg.TEST.BOOTSTRAP_ITERS`` > 0 (default 1000) the box task also returns 95% percentile
    bootstrap intervals over the test images, ``AP50_ci_low`` / ``AP50_ci_high`` and
    ``AP50_agnostic_ci_low`` / ``AP50_agnostic_ci_high`` (:mod:`.ap50_bootstrap`; both from the same
    image draws, seeded by ``cfg.TEST.BOOTSTRAP_SEED``). ``dets_per_gt`` and ``dup_share``: the duplicates
    NMS leaves (:func:`~.detection_errors.detections_per_gt` at score ``cfg.TEST.DUPLICATE_SCORE``).
    """

    def __init__(self, dataset_name, cfg=None, distributed=True, output_dir=None):
        masks = cfg is not None and cfg.MODEL.MASK_ON
        test = cfg.TEST if cfg is not None else {}
        self._bootstrap_iters = int(test.get("BOOTSTRAP_ITERS", 1000))
        self._bootstrap_seed = int(test.get("BOOTSTRAP_SEED", 0))
        self._duplicate_score = float(test.get("DUPLICATE_SCORE", 0.5))
        super().__init__(
            dataset_name,
            tasks=("bbox", "segm") if masks else ("bbox",),
            distributed=distributed,
            output_dir=output_dir,
            max_dets_per_image=cfg.TEST.DETECTIONS_PER_IMAGE if cfg is not None else None,
        )

    def _eval_predictions(self, predictions, img_ids=None):
        """Detectron2's COCO evaluation, plus ``AP50_agnostic`` (:func:`class_agnostic_ap50`) and the
        bootstrap intervals of AP50 and AP50_agnostic (:meth:`_bootstrap_ap50`)."""
        super()._eval_predictions(predictions, img_ids)
        if "bbox" in self._results and getattr(self, "_do_evaluation", True):
            # category ids are the dataset's here: super() mapped them back in place
            results = list(itertools.chain(*[x["instances"] for x in predictions]))
            max_dets = self._max_dets_per_image[-1] if self._max_dets_per_image else 100
            ap = class_agnostic_ap50(self._coco_api, results, max_dets)
            self._results["bbox"]["AP50_agnostic"] = ap
            self._logger.info(f"Class-agnostic bbox AP50 (every class merged): {ap:.2f}")
            if self._bootstrap_iters > 0:
                self._bootstrap_ap50(results, max_dets, img_ids)
            ids = set(img_ids) if img_ids is not None else None
            anns = [a for a in self._coco_api.dataset.get("annotations", []) if ids is None or a["image_id"] in ids]
            dup = detections_per_gt(anns, results, self._duplicate_score)
            self._results["bbox"]["dets_per_gt"] = dup["dets_per_gt"]
            self._results["bbox"]["dup_share"] = dup["dup_share"]
            self._logger.info(f"Detections per found box (score >= {self._duplicate_score}, IoU >= 0.5): "
                              f"{dup['dets_per_gt']:.3f}; boxes found more than once: {dup['dup_share']:.3f}")

    def _bootstrap_ap50(self, results, max_dets, img_ids):
        """Add ``AP50_ci_low/high`` and ``AP50_agnostic_ci_low/high`` to the bbox results: 95%
        percentile bootstrap over the test images, the same draws for both."""
        box = self._results["bbox"]
        counts = None
        for key, agnostic in (("AP50", False), ("AP50_agnostic", True)):
            matches = AP50Matches.from_coco(self._coco_api, results, agnostic, max_dets, img_ids)
            if counts is None or counts.shape[1] != matches.num_images:
                counts = bootstrap_counts(matches.num_images, self._bootstrap_iters, self._bootstrap_seed)
            ap, low, high = bootstrap_interval(matches, counts=counts)
            box[key + "_ci_low"], box[key + "_ci_high"] = low, high
            self._logger.info(
                f"bbox {key} {ap:.2f}, 95% bootstrap CI [{low:.2f}, {high:.2f}] "
                f"({self._bootstrap_iters} resamples of {matches.num_images} test images)"
            )

    def _derive_coco_results(self, coco_eval, iou_type, class_names=None):
        results = super()._derive_coco_results(coco_eval, iou_type, class_names)
        if coco_eval is None or not class_names:
            return results
        ap50 = per_category_ap50(coco_eval, class_names)
        self._logger.info(f"Per-category {iou_type} AP50:\n" + format_ap50_table(ap50))
        results.update({"AP50-" + name: ap for name, ap in ap50.items()})
        return results


def normalize_test_results(results, dataset_names):
    """``DefaultTrainer.test`` returns ``{dataset: {task: metrics}}``, but unwraps it to
    ``{task: metrics}`` when there is one dataset: always return the nested form."""
    if len(dataset_names) == 1 and dataset_names[0] not in results:
        return {dataset_names[0]: results}
    return dict(results)


def _format_ap(res, key):
    """``res[key]`` with one decimal, followed by ``[low, high]`` when ``res`` has
    ``<key>_ci_low`` / ``<key>_ci_high`` (e.g. ``41.3 [36.0, 46.9]``); "nan" when absent."""
    value = res.get(key, float("nan"))
    text = f"{value:.1f}"
    low, high = res.get(key + "_ci_low"), res.get(key + "_ci_high")
    if low is not None and high is not None and not any(math.isnan(v) for v in (value, low, high)):
        text += f" [{low:.1f}, {high:.1f}]"
    return text


def format_summary_table(results):
    """
    One row per test dataset: AP50 (headline), AP, AP75 and class-agnostic AP50 of the ``bbox`` task,
    and mask AP50 / AP when some dataset has a ``segm`` task. An AP50 with a bootstrap interval in
    the results (``AP50_ci_low`` / ``AP50_ci_high``) is shown as ``41.3 [36.0, 46.9]``.

    Args:
        results (dict): ``{dataset_name: {"bbox": {"AP50": ..., ...}, ["segm": {...}]}}``.
    """
    columns = [("bbox", k) for k in ("AP50", "AP", "AP75", "AP50_agnostic")]
    headers = ["dataset", "AP50", "AP", "AP75", "AP50 (any class)"]
    if any("segm" in res for res in results.values()):
        columns += [("segm", "AP50"), ("segm", "AP")]
        headers += ["mask AP50", "mask AP"]
    rows = [[name] + [_format_ap(res.get(task, {}), k) for task, k in columns]
            for name, res in results.items()]
    return tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True)
