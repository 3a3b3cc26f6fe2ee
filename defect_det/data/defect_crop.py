"""Training on crops of the full-resolution image, biased to the defects (``INPUT.DEFECT_CROP``).

Real Tianchi images are 2446x1000 (fabric) and 2560x1920 (aluminum) with defects of a few pixels;
resizing the whole image to a trainable size erases them. With ``INPUT.DEFECT_CROP.ENABLED`` every
training image is first cropped to ``SIZE`` (h, w) pixels at full resolution; the resize of
``INPUT.MIN_SIZE_TRAIN`` then applies to the crop (set it near the crop size to keep the pixels). With
probability ``DEFECT_PROB`` the crop holds a ground-truth box chosen uniformly (the whole box when it
fits, else its centre), otherwise it is placed uniformly. The template (TR-Pre / TR-Inter / TR-Post)
gets the same crop: the mapper replays the image's transforms on it. At test time use tiling
(``tools/predict.py --tile``, :class:`~defect_det.inference.TiledPredictor`) at the same size.

Boxes cut by the crop are clipped to it; boxes outside it are dropped (Detectron2's annotation
transform and ``filter_empty_instances``).
"""
import numpy as np
from detectron2.config import CfgNode as CN
from detectron2.data import transforms as T
from detectron2.structures import BoxMode

__all__ = ["DefectBiasedCrop", "add_defect_crop_config", "defect_crop_augmentation", "gt_boxes_xyxy"]


def add_defect_crop_config(cfg):
    """``INPUT.DEFECT_CROP.*`` (module docstring)."""
    cfg.INPUT.DEFECT_CROP = CN()
    cfg.INPUT.DEFECT_CROP.ENABLED = False
    # (height, width) of the crop in pixels of the original image; an image smaller than it is not cropped
    # along that side
    cfg.INPUT.DEFECT_CROP.SIZE = [512, 512]
    # probability that the crop holds a ground-truth box (chosen uniformly); otherwise placed uniformly
    cfg.INPUT.DEFECT_CROP.DEFECT_PROB = 0.8


class DefectBiasedCrop(T.Augmentation):
    """
    Fixed-size crop that holds a random ground-truth box with probability ``defect_prob``.

    ``get_transform(image (H, W, C), boxes (N, 4) XYXY_ABS or None)`` -> ``CropTransform`` of
    ``min(h, H) x min(w, W)`` pixels (Detectron2 passes ``AugInput.boxes``; without boxes the crop is
    uniform).
    """

    def __init__(self, crop_size, defect_prob: float = 0.8):
        super().__init__()
        if len(crop_size) != 2 or min(int(c) for c in crop_size) < 1:
            raise ValueError(f"INPUT.DEFECT_CROP.SIZE must be (height, width) >= 1, got {crop_size}")
        if not 0.0 <= float(defect_prob) <= 1.0:
            raise ValueError(f"INPUT.DEFECT_CROP.DEFECT_PROB must be in [0, 1], got {defect_prob}")
        self.crop_h, self.crop_w = int(crop_size[0]), int(crop_size[1])
        self.defect_prob = float(defect_prob)

    @staticmethod
    def _start(lo, hi, size, limit):
        """Start of a crop of ``size`` on an axis of length ``limit`` holding [lo, hi] if it fits
        (else its centre), uniformly among the valid starts."""
        if hi - lo <= size:
            a, b = hi - size, lo
        else:
            c = 0.5 * (lo + hi)
            a, b = c - size, c
        a = int(np.clip(np.ceil(a), 0, limit - size))
        b = int(np.clip(np.floor(b), 0, limit - size))
        return int(np.random.randint(min(a, b), max(a, b) + 1))

    def get_transform(self, image, boxes=None):
        h, w = image.shape[:2]
        ch, cw = min(self.crop_h, h), min(self.crop_w, w)
        if boxes is not None and len(boxes) and np.random.rand() < self.defect_prob:
            x0, y0, x1, y1 = (float(v) for v in np.asarray(boxes)[np.random.randint(len(boxes))])
            x = self._start(x0, x1, cw, w)
            y = self._start(y0, y1, ch, h)
        else:
            x = int(np.random.randint(0, w - cw + 1))
            y = int(np.random.randint(0, h - ch + 1))
        return T.CropTransform(x, y, cw, ch, orig_w=w, orig_h=h)


def defect_crop_augmentation(cfg, is_train):
    """The :class:`DefectBiasedCrop` of ``cfg`` for training with ``INPUT.DEFECT_CROP.ENABLED``, else None.
    Refuses Detectron2's own ``INPUT.CROP`` at the same time (two crops would compound)."""
    c = cfg.INPUT.DEFECT_CROP
    if not (is_train and c.ENABLED):
        return None
    if cfg.INPUT.CROP.ENABLED:
        raise ValueError("INPUT.DEFECT_CROP.ENABLED and INPUT.CROP.ENABLED are both set: choose one crop "
                         "(DEFECT_CROP crops at full resolution, biased to the defects)")
    return DefectBiasedCrop(tuple(c.SIZE), c.DEFECT_PROB)


def gt_boxes_xyxy(dataset_dict):
    """(N, 4) float32 XYXY_ABS boxes of ``dataset_dict["annotations"]`` (crowd boxes included: the crop
    only needs where the defects are), or None without annotations."""
    anns = dataset_dict.get("annotations") or []
    if not anns:
        return None
    return np.asarray([BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in anns],
                      dtype=np.float32).reshape(-1, 4)
