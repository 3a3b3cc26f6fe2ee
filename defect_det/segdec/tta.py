"""
Test-time augmentation for :class:`~defect_det.segdec.model.SegDecNet`: run the
network on flipped / transposed copies of each image, map every defect map back to the original
orientation, and average.

A transform is a triple ``(hflip, vflip, transpose)`` of booleans applied to the (N, C, H, W) image
in the order transpose -> horizontal flip (W axis) -> vertical flip (H axis); its inverse undoes
them in reverse order. The sets (``MODEL.SEGDEC.TEST_AUG_FLIP``, default: the training
augmentation ``MODEL.SEGDEC.FLIP``):

- "horizontal": identity, h;  "vertical": identity, v;  "both": the 4 flips;
- "dihedral": the 4 flips, each with and without a transpose (the 8 symmetries of a square; the
  network itself does not need a square input, every side stays a multiple of 8).

Averaging (``MODEL.SEGDEC.TEST_AUG_REDUCE``): "logit" averages the decision logits and the
segmentation logit maps before the sigmoid, "prob" averages the probabilities. Enabled with
Detectron2's own switch ``TEST.AUG.ENABLED`` (``DefectTrainer.test_with_TTA``), which evaluates
under ``<dataset>_TTA`` next to the plain evaluation.
"""
import itertools
from typing import Dict, List, Tuple

import torch
from torch import nn

from .model import SegDecNet

__all__ = ["SegDecNetWithTTA", "flip_transforms", "apply_transform", "invert_transform"]

Transform = Tuple[bool, bool, bool]  # (hflip, vflip, transpose)

_KINDS = ("horizontal", "vertical", "both", "dihedral")


def flip_transforms(kind: str) -> List[Transform]:
    """The transforms of ``kind`` (module doc), identity first."""
    if kind not in _KINDS:
        raise ValueError(f"SegDecNet test-time augmentation: MODEL.SEGDEC.TEST_AUG_FLIP (or, when it is "
                         f"empty, MODEL.SEGDEC.FLIP) must be one of {list(_KINDS)}, got {kind!r}")
    h = (False, True) if kind in ("horizontal", "both", "dihedral") else (False,)
    v = (False, True) if kind in ("vertical", "both", "dihedral") else (False,)
    t = (False, True) if kind == "dihedral" else (False,)
    return [(hf, vf, tr) for tr, vf, hf in itertools.product(t, v, h)]


def apply_transform(x: torch.Tensor, t: Transform) -> torch.Tensor:
    """``x``: (..., H, W); returns the transformed tensor, (..., W, H) when ``t`` transposes."""
    hflip, vflip, transpose = t
    if transpose:
        x = x.transpose(-1, -2)
    if hflip:
        x = x.flip(-1)
    if vflip:
        x = x.flip(-2)
    return x


def invert_transform(x: torch.Tensor, t: Transform) -> torch.Tensor:
    """Inverse of :func:`apply_transform`: ``invert_transform(apply_transform(x, t), t) == x``."""
    hflip, vflip, transpose = t
    if vflip:
        x = x.flip(-2)
    if hflip:
        x = x.flip(-1)
    if transpose:
        x = x.transpose(-1, -2)
    return x


class SegDecNetWithTTA(nn.Module):
    """
    Inference-only wrapper of a :class:`SegDecNet`. Same inputs (``image`` (C, H, W), optional
    ``height``/``width``) and outputs (``sem_seg`` (1, height, width), ``score`` ()) as the model, each
    the average over the transforms (module doc).
    """

    def __init__(self, model: SegDecNet, transforms: List[Transform], reduce: str = "logit"):
        """
        Args:
            model: a SegDecNet (a DDP-wrapped one is unwrapped).
            transforms: from :func:`flip_transforms`; at least one.
            reduce: "logit" or "prob" (module doc).
        """
        super().__init__()
        model = getattr(model, "module", model)
        if not isinstance(model, SegDecNet):
            raise TypeError(f"SegDecNetWithTTA wraps a SegDecNet, got {type(model).__name__} "
                            "(TEST.AUG.ENABLED is implemented for MODEL.META_ARCHITECTURE 'SegDecNet')")
        if not transforms:
            raise ValueError("SegDecNetWithTTA: no transforms")
        if reduce not in ("logit", "prob"):
            raise ValueError(f"MODEL.SEGDEC.TEST_AUG_REDUCE must be 'logit' or 'prob', got {reduce!r}")
        self.model = model
        self.transforms = list(transforms)
        self.reduce = reduce

    @classmethod
    def from_config(cls, cfg, model):
        kind = cfg.MODEL.SEGDEC.TEST_AUG_FLIP or cfg.MODEL.SEGDEC.FLIP
        return cls(model, flip_transforms(kind), cfg.MODEL.SEGDEC.TEST_AUG_REDUCE)

    @torch.no_grad()
    def forward(self, batched_inputs: List[Dict]):
        if self.model.training:
            raise RuntimeError("SegDecNetWithTTA is for inference: call .eval() (train the wrapped SegDecNet itself)")
        model = self.model
        x = model.preprocess_image(batched_inputs)
        seg_sum, dec_sum = 0.0, 0.0
        for t in self.transforms:
            features, seg_logits = model.segmentation(apply_transform(x, t))
            dec_logits = model.decision(features, seg_logits)
            seg_logits = invert_transform(seg_logits, t)
            if self.reduce == "prob":
                seg_logits, dec_logits = torch.sigmoid(seg_logits), torch.sigmoid(dec_logits)
            seg_sum = seg_sum + seg_logits
            dec_sum = dec_sum + dec_logits
        seg, dec = seg_sum / len(self.transforms), dec_sum / len(self.transforms)
        if self.reduce == "logit":
            seg, dec = torch.sigmoid(seg), torch.sigmoid(dec)
        return model.postprocess(batched_inputs, seg, dec, x.shape[-2:])
