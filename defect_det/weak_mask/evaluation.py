"""
Mask quality on the ground-truth boxes: the mask branch alone, independent of the detector.

COCO ``segm`` AP scores masks only where the detector found the defect, so with a weak detector it
mostly repeats the box AP. Here every test image's ground-truth boxes (with their classes) are handed
to the model as the detections (``model.inference(inputs, detected_instances=...)``, the
``forward_with_given_boxes`` path of Detectron2's ROI heads), and each predicted mask, pasted at the
original image size as usual, is compared with that instance's ground-truth mask:

    IoU_g = |M_pred,g ∩ M_gt,g| / |M_pred,g ∪ M_gt,g|

Reported per dataset (:func:`iou_summary`): ``mIoU`` (mean over instances) with a 95% bootstrap interval
over instances (``mIoU_ci_low`` / ``mIoU_ci_high``), ``IoU>=0.5`` / ``IoU>=0.75`` (share of instances),
``instances`` (count) and ``skipped`` (annotations without a ``segmentation``). Works with
any meta-architecture whose ``inference`` takes ``detected_instances`` (Detectron2's
``GeneralizedRCNN``, our ``TemplateRCNN``) and any mask head, so the lower bound (filled box), the
box-supervised head with and without refinement and the mask-supervised head are measured alike.
"""
import copy
import logging
from typing import Dict, Iterable, List

import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.data import DatasetCatalog
from detectron2.structures import Boxes, BoxMode, Instances

__all__ = ["annotation_mask", "decode_segmentation", "iou_summary", "mask_iou", "masks_on_gt_boxes",
           "masks_on_gt_boxes_for_datasets"]

logger = logging.getLogger(__name__)


def decode_segmentation(segm, height: int, width: int) -> np.ndarray:
    """COCO ``segmentation`` (RLE dict with str/bytes/list counts, or polygons) -> (H, W) bool."""
    if isinstance(segm, dict):
        if isinstance(segm.get("counts"), list):  # uncompressed RLE
            rle = mask_util.frPyObjects(segm, height, width)
        else:
            counts = segm["counts"]
            rle = {"size": list(segm["size"]), "counts": counts.encode() if isinstance(counts, str) else counts}
        m = mask_util.decode(rle)
    elif isinstance(segm, list):
        if not segm:
            raise ValueError("empty polygon list")
        m = mask_util.decode(mask_util.merge(mask_util.frPyObjects(segm, height, width)))
    else:
        raise ValueError(f"unsupported segmentation of type {type(segm).__name__}")
    if m.shape[:2] != (height, width):
        raise ValueError(f"segmentation of size {m.shape[:2]} on an image of size {(height, width)}")
    return m.astype(bool)


def annotation_mask(record: Dict, index: int) -> np.ndarray:
    """(H, W) bool mask of ``record["annotations"][index]``; a bad ``segmentation`` is a ValueError
    naming the image file and the annotation."""
    try:
        return decode_segmentation(record["annotations"][index]["segmentation"], record["height"], record["width"])
    except ValueError as e:
        raise ValueError(f"{record.get('file_name', '?')}: annotation {index}: segmentation: {e}") from None


def mask_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """IoU of two (H, W) bool masks; 1.0 when both are empty."""
    union = np.logical_or(pred, gt).sum()
    return float(np.logical_and(pred, gt).sum() / union) if union else 1.0


def iou_summary(ious, replicates: int = 1000, seed: int = 0) -> Dict[str, float]:
    """Per-instance mask IoUs (fractions) -> ``mIoU``, ``mIoU_ci_low`` / ``mIoU_ci_high`` (95% percentile
    bootstrap over instances, ``replicates`` resamples, deterministic by ``seed``), ``IoU>=0.5``,
    ``IoU>=0.75`` (shares) and ``instances``; NaN everywhere for no instance."""
    iou = np.asarray(ious, dtype=np.float64)
    n = len(iou)
    if n == 0:
        nan = float("nan")
        return {"mIoU": nan, "mIoU_ci_low": nan, "mIoU_ci_high": nan, "IoU>=0.5": nan, "IoU>=0.75": nan,
                "instances": 0}
    means = iou[np.random.default_rng(seed).integers(0, n, size=(replicates, n))].mean(axis=1)
    return {"mIoU": float(iou.mean()), "mIoU_ci_low": float(np.percentile(means, 2.5)),
            "mIoU_ci_high": float(np.percentile(means, 97.5)), "IoU>=0.5": float((iou >= 0.5).mean()),
            "IoU>=0.75": float((iou >= 0.75).mean()), "instances": n}


def _gt_instances(dataset_dict, input_hw) -> Instances:
    """The record's annotations as detections in the network input's coordinates
    (pred_boxes (R, 4) XYXY, pred_classes (R,), scores (R,) = 1)."""
    h_in, w_in = input_hw
    sx, sy = w_in / dataset_dict["width"], h_in / dataset_dict["height"]
    boxes = [BoxMode.convert(list(a["bbox"]), a.get("bbox_mode", BoxMode.XYXY_ABS), BoxMode.XYXY_ABS)
             for a in dataset_dict["annotations"]]
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4) * torch.tensor([sx, sy, sx, sy])
    inst = Instances((h_in, w_in))
    inst.pred_boxes = Boxes(boxes)
    inst.pred_classes = torch.tensor([a["category_id"] for a in dataset_dict["annotations"]], dtype=torch.int64)
    inst.scores = torch.ones(len(boxes))
    return inst


def masks_on_gt_boxes(model, dataset_dicts: Iterable[Dict], mapper) -> Dict[str, float]:
    """
    Args:
        model: a Detectron2 model with a mask branch, in eval mode.
        dataset_dicts: Detectron2 dataset dicts whose annotations carry ``segmentation``.
        mapper: the test-time mapper of the config (``build_defect_mapper(cfg, is_train=False)``);
            it must give ``image`` (C, H_in, W_in) and whatever else the model reads (templates).

    Returns:
        :func:`iou_summary` of the instances (fractions) plus ``skipped``.
    """
    ious: List[float] = []
    skipped = 0
    with torch.no_grad():
        for d in dataset_dicts:
            anns = [a for a in d.get("annotations", []) if a.get("iscrowd", 0) == 0]
            with_mask = [a for a in anns if a.get("segmentation")]
            skipped += len(anns) - len(with_mask)
            if not with_mask:
                continue
            record = dict(d, annotations=with_mask)
            inputs = mapper(copy.deepcopy(record))
            inst = _gt_instances(record, inputs["image"].shape[-2:])
            out = model.inference([inputs], detected_instances=[inst])[0]["instances"]
            if not out.has("pred_masks"):
                raise ValueError("the model predicts no 'pred_masks' (MODEL.MASK_ON is False?)")
            pred = out.pred_masks.to("cpu").numpy().astype(bool)  # (R, height, width)
            for i in range(len(with_mask)):
                ious.append(mask_iou(pred[i], annotation_mask(record, i)))
    if skipped:
        logger.warning(f"masks_on_gt_boxes: {skipped} annotations without 'segmentation' were not scored")
    return dict(iou_summary(ious), skipped=skipped)


def masks_on_gt_boxes_for_datasets(cfg, model, dataset_names) -> Dict[str, Dict[str, float]]:
    """:func:`masks_on_gt_boxes` on each registered dataset, with the config's test mapper."""
    from defect_det.data.build import build_defect_mapper

    model.eval()
    mapper = build_defect_mapper(cfg, is_train=False)
    return {name: masks_on_gt_boxes(model, DatasetCatalog.get(name), mapper) for name in dataset_names}
