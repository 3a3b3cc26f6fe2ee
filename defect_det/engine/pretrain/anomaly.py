"""Self-supervised pre-training objective ``"anomaly"``: synthetic irregularities pasted into defect-free
fabric, segmented by a light dense head on the bottom-up network.

Why: the image-level objective (:mod:`.model`) does not learn which defects are present from the raw image
(held-out defect mAP 0.16, projects/Benchmark/PRETRAIN.md): a global label gives a few bits per image for a
defect of a few pixels in a high-contrast texture. Here every pixel is supervised, and the supervision costs
no label at all: the network learns to find a local break of the texture's regularity, which is what a
defect detector without a template has to find.

**No label of the data is read.** The sources are defect-free images only (the normal images and the
templates of the pre-training set); the masks are those of the irregularities we paste ourselves
(:func:`synthesize_anomalies`), whose shapes and fills are generic (blobs, strokes, bands; shifted or
flipped texture, colour, blur, noise, another texture) and independent of the fabric generator's
defect painters. The generator's defect images enter only the validation metric ``defect_image_ap``
(image level: defective or not), never training.

Synthesis (per image, on the augmented un-normalised image ``I``, HxWx3 in 0..255):

- number of irregularities ``k``: 0 with probability ``p_clean`` (default 0.25), else 1..``max_k``;
- shape ``S`` (HxW in [0, 1]): a rough blob (3-48 px radii), a stroke (polyline, 1-4 px), or a band
  (1-8 px wide, a fraction of the image long), edges smoothed by a Gaussian (sigma 0.5-1.5 px);
- fill ``F``: ``I`` shifted by a random offset (texture discontinuity), ``I`` flipped, ``I`` + a colour
  offset (+-15..70 per channel), ``I`` scaled by 0.6-1.4, ``I`` blurred (sigma 1.5-4), ``I`` + Gaussian
  noise (sigma 8-30), or another defect-free image of the batch (foreign texture);
- ``I' = I + a * S * (F - I)``, ``a`` in [0.35, 1];
- target ``M = [S > 0.5] and [box3(|I' - I|) > 12]`` per pixel (the shape, where it changed the image,
  whatever its opacity ``a``) (a pasted region identical to what it covers
  is not an irregularity), max-pooled to the head's stride (a cell is positive if it holds one
  anomalous pixel).
"""
import math
from collections import OrderedDict

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["AnomalyPretrainNet", "anomaly_loss", "pixel_average_precision", "synthesize_anomalies"]

FILLS = ("shift", "flip", "color", "scale", "blur", "noise", "foreign")
SHAPES = ("blob", "stroke", "band")


def _shape(rng, h, w):
    """One random soft shape (HxW float32 in [0, 1])."""
    kind = SHAPES[int(rng.choice(len(SHAPES), p=[0.5, 0.3, 0.2]))]
    m = np.zeros((h, w), np.float32)
    if kind == "blob":
        rx, ry = (float(np.exp(rng.uniform(np.log(3.0), np.log(48.0)))) for _ in range(2))
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        n = 24
        th = np.linspace(0, 2 * np.pi, n, endpoint=False)
        rough = 1.0 + 0.25 * rng.standard_normal(n)
        rough = np.clip(np.convolve(np.r_[rough[-2:], rough, rough[:2]], np.ones(5) / 5, "valid"), 0.4, 1.6)
        ang = rng.uniform(0, np.pi)
        x = rx * rough * np.cos(th)
        y = ry * rough * np.sin(th)
        pts = np.stack([cx + x * np.cos(ang) - y * np.sin(ang), cy + x * np.sin(ang) + y * np.cos(ang)], 1)
        cv2.fillPoly(m, [np.round(pts).astype(np.int32)], 1.0)
    elif kind == "stroke":
        n = int(rng.integers(2, 6))
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        ang = rng.uniform(0, 2 * np.pi)
        pts = [(x, y)]
        for _ in range(n - 1):
            ang += rng.normal(0, 0.5)
            step = rng.uniform(5, 50)
            x, y = x + step * np.cos(ang), y + step * np.sin(ang)
            pts.append((x, y))
        cv2.polylines(m, [np.round(np.array(pts)).astype(np.int32)], False, 1.0, int(rng.integers(1, 5)))
    else:
        width = int(rng.integers(1, 9))
        length = rng.uniform(0.2, 1.0)
        if rng.random() < 0.5:
            y0 = int(rng.integers(0, max(h - width, 1)))
            x0 = int(rng.uniform(0, 1 - length) * w)
            m[y0:y0 + width, x0:x0 + int(length * w)] = 1.0
        else:
            x0 = int(rng.integers(0, max(w - width, 1)))
            y0 = int(rng.uniform(0, 1 - length) * h)
            m[y0:y0 + int(length * h), x0:x0 + width] = 1.0
    sigma = rng.uniform(0.5, 1.5)
    return cv2.GaussianBlur(m, (0, 0), sigma)


def _fill(rng, img, other):
    """The content pasted into a shape: HxWx3 float32 (0..255) from ``img`` (and ``other``, another
    defect-free image of the same size, or None)."""
    h, w = img.shape[:2]
    kinds = FILLS if other is not None else FILLS[:-1]
    kind = kinds[int(rng.integers(len(kinds)))]
    if kind == "shift":
        dy, dx = int(rng.integers(3, max(h // 2, 4))), int(rng.integers(3, max(w // 2, 4)))
        return np.roll(img, (dy, dx), axis=(0, 1))
    if kind == "flip":
        out = img[::-1] if rng.random() < 0.5 else img[:, ::-1]
        return np.ascontiguousarray(out)
    if kind == "color":
        off = rng.uniform(15, 70, size=3) * rng.choice([-1.0, 1.0], size=3)
        return np.clip(img + off.astype(np.float32), 0, 255)
    if kind == "scale":
        f = rng.uniform(0.6, 0.85) if rng.random() < 0.5 else rng.uniform(1.15, 1.4)
        return np.clip(img * np.float32(f), 0, 255)
    if kind == "blur":
        return cv2.GaussianBlur(img, (0, 0), rng.uniform(1.5, 4.0))
    if kind == "noise":
        return np.clip(img + rng.normal(0, rng.uniform(8, 30), img.shape).astype(np.float32), 0, 255)
    return other


def synthesize_anomalies(img, rng, other=None, p_clean=0.25, max_k=3, min_change=12.0):
    """
    Paste random irregularities into a defect-free image (module docstring).

    Args:
        img: HxWx3 float32 array, 0..255 (not modified).
        rng: ``np.random.Generator``; the result is a pure function of its state.
        other: HxWx3 float32 defect-free image of the same size for the "foreign" fill, or None.
    Returns:
        tuple(ndarray, ndarray): the image (HxWx3 float32) and the target mask (HxW float32 {0, 1}).
    """
    img = np.asarray(img, np.float32)
    h, w = img.shape[:2]
    out = img.copy()
    region = np.zeros((h, w), bool)
    if rng.random() >= p_clean:
        for _ in range(int(rng.integers(1, max_k + 1))):
            shape = _shape(rng, h, w)
            s = shape * np.float32(rng.uniform(0.35, 1.0))
            f = _fill(rng, out, other)
            out = out + s[..., None] * (f - out)
            region |= shape > 0.5
    change = cv2.blur(np.abs(out - img).max(axis=2), (3, 3))
    return out, (region & (change > min_change)).astype(np.float32)


class AnomalyPretrainNet(nn.Module):
    """
    Bottom-up network + a light dense head: each stage projected to ``dim`` channels (1x1 conv),
    resampled to stride ``stride`` (average pooling for finer stages, bilinear for coarser ones),
    summed, then 3x3 conv + ReLU + 1x1 conv -> one anomaly logit per cell.

    ``forward(x (N, 3, H, W))`` -> logits (N, 1, ceil(H / stride), ceil(W / stride)).
    """

    def __init__(self, bottom_up: nn.Module, key_prefix: str, dim: int = 64, stride: int = 8, prior: float = 0.02):
        super().__init__()
        self.bottom_up = bottom_up
        self.key_prefix = key_prefix
        self.stride = int(stride)
        shapes = bottom_up.output_shape()
        self.features = sorted(shapes, key=lambda k: shapes[k].stride)
        self.strides = {k: shapes[k].stride for k in self.features}
        self.lateral = nn.ModuleDict({k: nn.Conv2d(shapes[k].channels, dim, 1) for k in self.features})
        self.fuse = nn.Conv2d(dim, dim, 3, padding=1)
        self.predict = nn.Conv2d(dim, 1, 1)
        for m in list(self.lateral.values()) + [self.fuse, self.predict]:
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)
        nn.init.normal_(self.predict.weight, std=0.01)
        nn.init.constant_(self.predict.bias, math.log(prior / (1 - prior)))

    def forward(self, x):
        feats = self.bottom_up(x)
        size = (math.ceil(x.shape[2] / self.stride), math.ceil(x.shape[3] / self.stride))
        z = 0
        for k in self.features:
            f = self.lateral[k](feats[k])
            if self.strides[k] < self.stride:
                f = F.adaptive_avg_pool2d(f, size)
            elif tuple(f.shape[2:]) != size:
                f = F.interpolate(f, size=size, mode="bilinear", align_corners=False)
            z = z + f
        return self.predict(F.relu(self.fuse(F.relu(z))))


def pool_target(mask, size):
    """(N, H, W) {0, 1} masks -> (N, 1, h, w): 1 where a cell holds an anomalous pixel (max pooling: a
    1-px stroke must make its cells positive, as a thin defect must make the detector fire)."""
    return F.adaptive_max_pool2d(mask[:, None].float(), size)


def anomaly_loss(logits, mask, pos_weight=5.0):
    """
    Args:
        logits: (N, 1, h, w); mask: (N, H, W) {0, 1} target at input resolution.
    Returns:
        dict: ``loss_anomaly``: BCE with logits against the pooled target, positives weighted
        ``pos_weight`` (anomalous cells are a few percent of the image).
    """
    t = pool_target(mask, logits.shape[2:])
    pw = torch.tensor(float(pos_weight), device=logits.device)
    return {"loss_anomaly": F.binary_cross_entropy_with_logits(logits, t, pos_weight=pw)}


def pixel_average_precision(scores, targets, threshold=0.5):
    """Average precision of cell scores against cells with a target fraction > ``threshold``.

    Args:
        scores, targets: arrays of the same size (flattened). Returns NaN without positives.
    """
    from .model import average_precision

    return average_precision(np.ravel(scores), np.ravel(targets) > threshold)


def anomaly_stats(logits, mask):
    """Cheap training statistics: mean predicted probability on target cells and on the others."""
    t = pool_target(mask, logits.shape[2:]) > 0.5
    p = torch.sigmoid(logits.detach())
    return OrderedDict([
        ("p_anomalous", float(p[t].mean()) if bool(t.any()) else float("nan")),
        ("p_normal", float(p[~t].mean())),
    ])
