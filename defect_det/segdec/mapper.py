"""``SegDecDatasetMapper``: dataset dicts of the surface-defect loaders -> ``SegDecNet`` inputs.

Per image (``MODEL.SEGDEC.*`` keys in brackets):

1. read the image in ``INPUT.FORMAT`` ("L" grayscale or "RGB"/"BGR") and its pixel label
   (``sem_seg_file_name``: nonzero = defect; or the Severstal ``rle`` dict, all classes merged;
   defect-free images without either get an all-zero mask);
2. resize both to ``INPUT_SIZE`` (H, W) (image: area / bilinear, mask: nearest);
3. training only, optional (``FLIP``): the same random horizontal and/or vertical flip of image and
   mask (each direction with probability 1/2; "none" by default, as the paper); "dihedral" adds a
   transpose (probability 1/2), i.e. all 8 rotations/reflections of a square input;
4. training targets: the mask dilated by a ``DILATE`` x ``DILATE`` square; its distance-transform
   weights ``w = (edt / max edt) ** P * OMEGA`` on defect pixels, 1 elsewhere (``WEIGHTED_SEG_LOSS``,
   else 1 everywhere); then both averaged over 8x8 blocks: ``seg_target`` (H/8, W/8) in [0, 1] (soft
   target) and ``seg_weight`` (H/8, W/8).

Output dict: ``image`` (C, H, W) float32 in 0..255, ``label`` (0/1), ``use_pixel_labels``,
``sem_seg`` (H, W) uint8 undilated mask (absent when the image has no pixel label), ``seg_target``,
``seg_weight`` (when the mask is known), and ``file_name``, ``image_id``, ``height``, ``width`` (of
the original image, the size of the model's output maps).

Mixed supervision: in training, ``segmented_files`` (a set of ``file_name``, see
:func:`select_segmented_files`) lists the defective images whose pixel labels may be used; the
others get ``use_pixel_labels=False`` and contribute only the classification loss. Defect-free
images always use their (all-zero) pixel labels.
"""
import copy
import os
from typing import Dict, Iterable, List, Optional, Set

import cv2
import numpy as np
import torch
from PIL import Image

from detectron2.config import configurable

from ..data.datasets.surface import rle_decode
from ..data.image_io import UnreadableImageError, read_image

__all__ = ["SegDecDatasetMapper", "distance_transform_weights", "segdec_targets",
           "select_segmented_files", "load_mask"]

STRIDE = 8
_CHANNELS = {"L": 1, "RGB": 3, "BGR": 3}
# numpy axes of (H, W, C) flipped (each with probability 1/2); "dihedral" also transposes H and W
_FLIPS = {"none": (), "horizontal": (1,), "vertical": (0,), "both": (1, 0), "dihedral": (1, 0)}


def distance_transform_weights(mask: np.ndarray, p: float, omega: float) -> np.ndarray:
    """
    Args:
        mask: (H, W) {0, 1}.
    Returns:
        (H, W) float32: ``(edt / max edt) ** p * omega`` on mask pixels (edt = Euclidean distance to
        the nearest background pixel, so largest at the centre of a region), 1 on the background.
    """
    mask = (np.asarray(mask) > 0).astype(np.uint8)
    weights = np.ones(mask.shape, np.float32)
    if not mask.any():
        return weights
    edt = cv2.distanceTransform(mask, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    peak = float(edt.max())
    fg = mask > 0
    weights[fg] = (edt[fg] / peak) ** p * omega
    return weights


def _block_mean(x: np.ndarray, stride: int = STRIDE) -> np.ndarray:
    h, w = x.shape
    return x.reshape(h // stride, stride, w // stride, stride).mean(axis=(1, 3)).astype(np.float32)


def segdec_targets(mask: np.ndarray, dilate: int = 1, weighted: bool = False, p: float = 1.0,
                   omega: float = 1.0):
    """(H, W) {0, 1} mask, H and W multiples of 8 -> (seg_target, seg_weight), each (H/8, W/8)
    float32: the dilated mask and its pixel weights averaged over 8x8 blocks (module doc)."""
    mask = (np.asarray(mask) > 0).astype(np.uint8)
    if mask.shape[0] % STRIDE or mask.shape[1] % STRIDE:
        raise ValueError(f"segdec_targets: mask size {mask.shape} must be a multiple of {STRIDE}")
    if dilate > 1:
        mask = cv2.dilate(mask, np.ones((dilate, dilate), np.uint8))
    weight = distance_transform_weights(mask, p, omega) if weighted else np.ones(mask.shape, np.float32)
    return _block_mean(mask.astype(np.float32)), _block_mean(weight)


def select_segmented_files(dataset_dicts: Iterable[Dict], num_segmented: int) -> Optional[Set[str]]:
    """``file_name`` of the first ``num_segmented`` defective images with pixel labels, in dataset
    order (mixed supervision); ``None`` (= all) for ``num_segmented < 0``."""
    if num_segmented < 0:
        return None
    positives = [d["file_name"] for d in dataset_dicts
                 if int(d["label"]) == 1 and d.get("has_pixel_labels", True)]
    return set(positives[:num_segmented])


def load_mask(dataset_dict: Dict) -> Optional[np.ndarray]:
    """The (height, width) uint8 {0, 1} mask of a dataset dict, or None if it has none."""
    d = dataset_dict
    h, w = int(d["height"]), int(d["width"])
    if d.get("sem_seg_file_name"):
        path = d["sem_seg_file_name"]
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{d['file_name']}: label {path} not found")
        try:
            with Image.open(path) as im:
                mask = np.asarray(im)
        except Exception as e:  # noqa: BLE001  (PIL raises OSError, SyntaxError, ...)
            raise UnreadableImageError.of(path, e, f"label image (of {d['file_name']})") from e
        if mask.ndim == 3:
            mask = mask.max(axis=2)
        if mask.shape != (h, w):
            raise ValueError(f"mask size mismatch: label {path} is {mask.shape[1]}x{mask.shape[0]} "
                             f"(WxH), image {d['file_name']} is {w}x{h}")
        return (mask > 0).astype(np.uint8)
    if d.get("rle"):
        mask = np.zeros((h, w), np.uint8)
        for class_id, rle in d["rle"].items():
            try:
                mask |= rle_decode(rle, (h, w))
            except ValueError as e:
                raise ValueError(f"{d['file_name']}: class {class_id}: {e}") from None
        return mask
    if d.get("label") is not None and int(d["label"]) == 0:
        return np.zeros((h, w), np.uint8)
    return None  # a defective image without a pixel label, or a new image without any label


class SegDecDatasetMapper:
    """Dataset dict -> SegDecNet input (see module doc)."""

    @configurable
    def __init__(self, is_train: bool, *, image_format: str, input_size, dilate: int = 7,
                 weighted_seg_loss: bool = True, dt_p: float = 1.0, dt_omega: float = 10.0,
                 segmented_files: Optional[Set[str]] = None, flip: str = "none"):
        """
        Args:
            image_format: "L", "RGB" or "BGR".
            input_size: (H, W), multiples of 8.
            dilate, weighted_seg_loss, dt_p, dt_omega: label dilation and DT weights.
            flip: training augmentation: "none", "horizontal", "vertical" or "both" (each direction
                flipped with probability 1/2, image and mask alike); "dihedral": "both" plus a
                transpose with probability 1/2 (square ``input_size`` only).
            segmented_files: training only: defective images whose pixel labels are used
                (None = all).
        """
        if image_format not in _CHANNELS:
            raise ValueError(f"SegDecDatasetMapper: INPUT.FORMAT must be one of {list(_CHANNELS)}, "
                             f"got {image_format!r}")
        h, w = (int(v) for v in input_size)
        if h <= 0 or w <= 0 or h % STRIDE or w % STRIDE:
            raise ValueError(f"MODEL.SEGDEC.INPUT_SIZE must be positive multiples of {STRIDE}, "
                             f"got {tuple(input_size)}")
        if flip not in _FLIPS:
            raise ValueError(f"MODEL.SEGDEC.FLIP must be one of {list(_FLIPS)}, got {flip!r}")
        if flip == "dihedral" and h != w:
            raise ValueError(f"MODEL.SEGDEC.FLIP 'dihedral' transposes the image: it needs a square "
                             f"MODEL.SEGDEC.INPUT_SIZE, got {tuple(input_size)}")
        if int(dilate) < 1:
            raise ValueError(f"MODEL.SEGDEC.DILATE must be >= 1, got {dilate}")
        self.is_train = is_train
        self.image_format = image_format
        self.input_size = (h, w)
        self.dilate = int(dilate)
        self.weighted_seg_loss = weighted_seg_loss
        self.dt_p, self.dt_omega = float(dt_p), float(dt_omega)
        self.segmented_files = segmented_files
        self.flip_axes = _FLIPS[flip] if is_train else ()
        self.transpose = is_train and flip == "dihedral"

    @classmethod
    def from_config(cls, cfg, is_train: bool = True, segmented_files: Optional[Set[str]] = None):
        c = cfg.MODEL.SEGDEC
        fmt = cfg.INPUT.FORMAT
        if fmt in _CHANNELS and _CHANNELS[fmt] != c.IN_CHANNELS:
            raise ValueError(f"INPUT.FORMAT={fmt!r} gives {_CHANNELS[fmt]} channels but "
                             f"MODEL.SEGDEC.IN_CHANNELS={c.IN_CHANNELS}")
        return {"is_train": is_train, "image_format": fmt, "input_size": tuple(c.INPUT_SIZE),
                "dilate": c.DILATE, "weighted_seg_loss": c.WEIGHTED_SEG_LOSS,
                "dt_p": c.WEIGHTED_SEG_LOSS_P, "dt_omega": c.WEIGHTED_SEG_LOSS_OMEGA,
                "segmented_files": segmented_files if is_train else None, "flip": c.FLIP}

    def _read_image(self, d):
        path = d["file_name"]
        if not os.path.isfile(path):
            raise FileNotFoundError(f"image {path} not found (image_id {d.get('image_id')})")
        image = read_image(path, format=self.image_format)
        if image.shape[:2] != (int(d["height"]), int(d["width"])):
            raise ValueError(f"image {path} is {image.shape[1]}x{image.shape[0]} (WxH) but its dataset "
                             f"dict says {d['width']}x{d['height']}")
        return image

    def __call__(self, dataset_dict: Dict) -> Dict:
        d = copy.deepcopy(dataset_dict)
        return self.map_image(d, self._read_image(d))

    def map_image(self, d: Dict, image: np.ndarray) -> Dict:
        """What ``__call__`` does after reading the image: ``image`` (H, W, C array in ``INPUT.FORMAT``) and
        the labels of ``d`` become the model input. At inference ``label`` may be absent (a new image).
        Used by :class:`~defect_det.inference.DefectPredictor` on arrays."""
        mask = load_mask(d)
        h, w = self.input_size
        if image.shape[:2] != (h, w):
            shrink = image.shape[0] > h and image.shape[1] > w
            image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
            if image.ndim == 2:
                image = image[:, :, None]
            if mask is not None:
                mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)
        for axis in self.flip_axes:
            if np.random.rand() < 0.5:
                image = np.flip(image, axis)
                mask = np.flip(mask, axis) if mask is not None else None
        if self.transpose and np.random.rand() < 0.5:
            image = image.transpose(1, 0, 2)
            mask = mask.T if mask is not None else None
        image = np.ascontiguousarray(image)
        mask = np.ascontiguousarray(mask) if mask is not None else None
        out = {
            "file_name": d.get("file_name"), "image_id": d.get("image_id"), "height": int(d["height"]),
            "width": int(d["width"]), "image": torch.from_numpy(image.transpose(2, 0, 1).astype(np.float32)),
        }
        label = d.get("label")
        if label is None and not self.is_train:
            return out  # a new image: nothing to evaluate against
        label = int(d["label"])
        if label not in (0, 1):
            raise ValueError(f"{d['file_name']}: label must be 0 or 1, got {d['label']!r}")
        out["label"] = label
        use = mask is not None
        if use and label == 1 and self.is_train and self.segmented_files is not None:
            use = d["file_name"] in self.segmented_files
        out["use_pixel_labels"] = use
        if mask is not None:
            out["sem_seg"] = torch.as_tensor(mask)
            target, weight = segdec_targets(mask, self.dilate, self.weighted_seg_loss, self.dt_p,
                                            self.dt_omega)
            out["seg_target"], out["seg_weight"] = torch.as_tensor(target), torch.as_tensor(weight)
        return out
