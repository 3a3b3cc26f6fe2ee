"""Synthetic DAGM-2007-style generator (textured grayscale surfaces with one defect type per class).

Writes the DAGM 2007 on-disk layout, so :func:`defect_det.data.datasets.surface.load_dagm` and the
SegDecNet pipeline run end to end without downloads::

    <out>/ClassN/{Train,Test}/####.PNG            grayscale uint8, size x size
    <out>/ClassN/{Train,Test}/Label/Labels.txt    "1", then per image (tab-separated):
                                                  id (1-based), 0/1 defective, ####.PNG, 0,
                                                  ####_label.PNG or 0
    <out>/ClassN/{Train,Test}/Label/####_label.PNG  weak label: a filled ellipse (0/255) around the
                                                  defect, as in DAGM
    <out>/ClassN/{Train,Test}/Label/####_mask.PNG   exact defect pixels (0/255): NOT part of DAGM;
                                                  ``load_dagm(..., use_exact_masks=True)`` reads them
    <out>/meta.json                               generator name/version, config, counts

Model: class N has one texture family and one defect type (``CLASS_SPECS[(N - 1) % 10]``) with
class-level parameters (scale, orientation, contrast) and per-image variation (phase, noise,
brightness). A defect changes the texture inside its exact mask (darker/brighter blob, thin scratch,
jagged crack, smoothed patch, bright spot cluster); the weak label is the ellipse of the mask's
minimum-area rectangle (half-axes 1.3 x its half-sides + 2 px) united with the mask. Defective images are
numbered like the others (a random ``defect_fraction`` of them). Every random number comes from
``numpy.random.default_rng(SeedSequence([seed, class, split, index]))``: same config -> same bytes.
Only numpy and OpenCV are needed.
"""
import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Dict, Tuple

import cv2
import numpy as np

__all__ = ["CLASS_SPECS", "DEFECT_KINDS", "TEXTURES", "SyntheticDAGMConfig", "generate_dagm_dataset",
           "render_sample"]

GENERATOR_NAME = "defect_det.data.synthetic.dagm"
GENERATOR_VERSION = "1.0"
TEXTURES = ("cloudy", "grating", "grain", "cells", "crosshatch", "wood")
DEFECT_KINDS = ("blob", "scratch", "spots", "smooth", "crack")
CLASS_SPECS = (
    ("cloudy", "blob"), ("grating", "scratch"), ("grain", "spots"), ("cells", "smooth"),
    ("crosshatch", "scratch"), ("wood", "crack"), ("cloudy", "crack"), ("grating", "blob"),
    ("grain", "smooth"), ("cells", "spots"),
)
"""(texture, defect kind) of classes 1..10."""
_SPLITS = ("Train", "Test")


@dataclass
class SyntheticDAGMConfig:
    """Parameters of :func:`generate_dagm_dataset` (see :meth:`validate`)."""

    seed: int = 0
    """Master seed (>= 0)."""
    classes: Tuple[int, ...] = (1, 2)
    """DAGM class numbers to write (each in 1..10)."""
    size: int = 128
    """Image side in pixels (>= 32, a multiple of 8). Real DAGM: 512."""
    train_images: int = 80
    """Images per class in ``Train`` (>= 2)."""
    test_images: int = 80
    """Images per class in ``Test`` (>= 2)."""
    defect_fraction: float = 0.25
    """Share of defective images per split (at least one of each kind is always written)."""
    defect_contrast: float = 1.0
    """Multiplies the intensity change of every defect (0.2 .. 4)."""
    noise_sigma: float = 4.0
    """Gaussian sensor noise, grey levels (0 .. 30)."""

    def validate(self):
        """Raise ``ValueError`` naming the offending field."""
        def bad(name, msg):
            raise ValueError(f"SyntheticDAGMConfig.{name}: {msg}")

        for name in ("seed", "size", "train_images", "test_images"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                bad(name, f"must be an int, got {v!r}")
        if self.seed < 0:
            bad("seed", f"must be >= 0, got {self.seed}")
        if self.size < 32 or self.size % 8:
            bad("size", f"must be >= 32 and a multiple of 8, got {self.size}")
        for name in ("train_images", "test_images"):
            if getattr(self, name) < 2:
                bad(name, f"must be >= 2 (one defective, one normal), got {getattr(self, name)}")
        classes = tuple(self.classes) if not isinstance(self.classes, (str, int)) else None
        if not classes or any(isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 1 <= c <= 10
                              for c in classes) or len(set(classes)) != len(classes):
            bad("classes", f"must be distinct ints in 1..10, got {self.classes!r}")
        if not 0.0 < self.defect_fraction < 1.0:
            bad("defect_fraction", f"must be in (0, 1), got {self.defect_fraction}")
        if not 0.2 <= self.defect_contrast <= 4.0:
            bad("defect_contrast", f"must be in [0.2, 4], got {self.defect_contrast}")
        if not 0.0 <= self.noise_sigma <= 30.0:
            bad("noise_sigma", f"must be in [0, 30], got {self.noise_sigma}")
        return self


def _smooth_noise(rng, size, sigma, aniso=1.0, angle=0.0):
    """Gaussian-filtered white noise normalised to zero mean, unit std; optionally stretched."""
    n = rng.standard_normal((size * 2, size * 2)).astype(np.float32)
    n = cv2.GaussianBlur(n, (0, 0), sigmaX=sigma * aniso, sigmaY=sigma)
    rot = cv2.getRotationMatrix2D((size, size), angle, 1.0)
    n = cv2.warpAffine(n, rot, (size * 2, size * 2), borderMode=cv2.BORDER_REFLECT)
    n = n[size // 2 : size // 2 + size, size // 2 : size // 2 + size]
    return (n - n.mean()) / (n.std() + 1e-6)


def _texture(rng, kind, size, cp):
    """(size, size) float32 texture in grey levels around 128. ``cp``: class-level parameters."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    if kind == "cloudy":
        t = 0.7 * _smooth_noise(rng, size, cp["scale"] * 2) + 0.3 * _smooth_noise(rng, size, cp["scale"] / 2)
    elif kind == "grating":
        a = np.deg2rad(cp["angle"] + rng.uniform(-3, 3))
        phase = rng.uniform(0, 2 * np.pi)
        t = np.sin((xx * np.cos(a) + yy * np.sin(a)) * 2 * np.pi / cp["period"] + phase) \
            + 0.3 * _smooth_noise(rng, size, 1.0)
    elif kind == "grain":
        t = _smooth_noise(rng, size, 0.8) + 0.4 * _smooth_noise(rng, size, cp["scale"] * 3)
    elif kind == "cells":
        n = _smooth_noise(rng, size, cp["scale"])
        t = np.tanh(3 * n) + 0.2 * _smooth_noise(rng, size, 1.0)
    elif kind == "crosshatch":
        a = np.deg2rad(cp["angle"])
        u, v = xx * np.cos(a) + yy * np.sin(a), -xx * np.sin(a) + yy * np.cos(a)
        p = cp["period"]
        t = np.sin(u * 2 * np.pi / p + rng.uniform(0, 6.3)) + np.sin(v * 2 * np.pi / p + rng.uniform(0, 6.3)) \
            + 0.3 * _smooth_noise(rng, size, 1.0)
    elif kind == "wood":
        n = _smooth_noise(rng, size, cp["scale"], aniso=6.0, angle=cp["angle"])
        t = np.sin(n * 4.0 + rng.uniform(0, 6.3)) + 0.3 * n
    else:
        raise ValueError(f"unknown texture {kind!r}")
    t = (t - t.mean()) / (t.std() + 1e-6)
    return (128 + rng.uniform(-15, 15) + cp["contrast"] * t).astype(np.float32)


def _random_path(rng, size, length, jagged):
    """Points of a (possibly jagged) polyline of about ``length`` px inside the image."""
    x, y = rng.uniform(0.2, 0.8, 2) * size
    a = rng.uniform(0, 2 * np.pi)
    pts = [(x, y)]
    step = max(2.0, length / 12)
    for _ in range(12):
        a += rng.normal(0, 0.6 if jagged else 0.08)
        x = float(np.clip(x + step * np.cos(a), 1, size - 2))
        y = float(np.clip(y + step * np.sin(a), 1, size - 2))
        pts.append((x, y))
    return np.round(np.array(pts)).astype(np.int32)


def _paint_defect(rng, img, kind, cp, contrast):
    """Paint one defect on ``img`` (float32, in place); return its exact mask (uint8 0/1)."""
    size = img.shape[0]
    mask = np.zeros((size, size), np.uint8)
    amp = contrast * cp["contrast"] * rng.uniform(0.9, 1.4) * rng.choice([-1.0, 1.0])
    if kind == "blob":
        c = tuple(int(v) for v in rng.uniform(0.2, 0.8, 2) * size)
        axes = tuple(int(v) for v in rng.uniform(0.04, 0.12, 2) * size + 2)
        cv2.ellipse(mask, c, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        soft = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 1.5) * mask
        img += amp * 1.2 * soft
    elif kind in ("scratch", "crack"):
        pts = _random_path(rng, size, rng.uniform(0.3, 0.6) * size, jagged=kind == "crack")
        cv2.polylines(mask, [pts], False, 1, thickness=int(rng.integers(1, 3)))
        img += (-abs(amp) if kind == "crack" else amp) * 1.5 * mask  # cracks are dark
    elif kind == "spots":
        c = rng.uniform(0.2, 0.8, 2) * size
        for _ in range(int(rng.integers(3, 7))):
            p = tuple(int(v) for v in np.clip(c + rng.normal(0, 0.04 * size, 2), 2, size - 3))
            cv2.circle(mask, p, int(rng.integers(1, 3)), 1, -1)
        img += abs(amp) * 1.6 * mask
    elif kind == "smooth":
        c = tuple(int(v) for v in rng.uniform(0.25, 0.75, 2) * size)
        axes = tuple(int(v) for v in rng.uniform(0.08, 0.16, 2) * size + 2)
        cv2.ellipse(mask, c, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        blurred = cv2.GaussianBlur(img, (0, 0), 3.0)
        m = mask.astype(bool)
        img[m] = blurred[m] + 0.4 * amp
    else:
        raise ValueError(f"unknown defect {kind!r}")
    return mask


def _weak_label(mask):
    """Filled ellipse (0/255) centred on the mask's min-area rectangle, half-axes 1.3 x its
    half-sides + 2 px, united with the mask (so it always covers the defect)."""
    ys, xs = np.nonzero(mask)
    pts = np.stack([xs, ys], 1).astype(np.float32)
    (cx, cy), (w, h), angle = cv2.minAreaRect(pts)
    label = np.zeros(mask.shape, np.uint8)
    axes = (int(np.ceil(w / 2 * 1.3 + 2)), int(np.ceil(h / 2 * 1.3 + 2)))
    cv2.ellipse(label, (int(round(cx)), int(round(cy))), axes, angle, 0, 360, 255, -1)
    label[mask > 0] = 255  # always covers the defect
    return label


def _class_params(seed, cls):
    rng = np.random.default_rng(np.random.SeedSequence([seed, cls, 99]))
    return {"scale": float(rng.uniform(2.0, 5.0)), "angle": float(rng.uniform(0, 180)),
            "period": float(rng.uniform(5.0, 11.0)), "contrast": float(rng.uniform(18, 30))}


def render_sample(cfg: SyntheticDAGMConfig, cls: int, split: str, index: int, defective: bool):
    """One image: (image uint8 (S, S), exact mask uint8 0/1 or None)."""
    texture, defect = CLASS_SPECS[(cls - 1) % len(CLASS_SPECS)]
    cp = _class_params(cfg.seed, cls)
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, cls, _SPLITS.index(split), index]))
    img = _texture(rng, texture, cfg.size, cp)
    mask = _paint_defect(rng, img, defect, cp, cfg.defect_contrast) if defective else None
    img += rng.normal(0, cfg.noise_sigma, img.shape).astype(np.float32)
    return np.clip(np.round(img), 0, 255).astype(np.uint8), mask


def generate_dagm_dataset(out_dir: str, cfg: SyntheticDAGMConfig = None) -> Dict:
    """Write the dataset (module doc); return the summary also written to ``meta.json``."""
    cfg = (cfg or SyntheticDAGMConfig()).validate()
    summary = {"generator": GENERATOR_NAME, "version": GENERATOR_VERSION,
               "config": dataclasses.asdict(cfg), "classes": {}}
    for cls in cfg.classes:
        summary["classes"][cls] = {}
        for split, n in (("Train", cfg.train_images), ("Test", cfg.test_images)):
            folder = os.path.join(out_dir, f"Class{cls}", split)
            os.makedirs(os.path.join(folder, "Label"), exist_ok=True)
            plan = np.random.default_rng(np.random.SeedSequence([cfg.seed, cls, _SPLITS.index(split), 7]))
            n_def = min(n - 1, max(1, int(round(cfg.defect_fraction * n))))
            defective = set(plan.choice(n, size=n_def, replace=False).tolist())
            rows = ["1"]
            for i in range(n):
                name = f"{i:04d}.PNG"
                img, mask = render_sample(cfg, cls, split, i, i in defective)
                cv2.imwrite(os.path.join(folder, name), img)
                if mask is None:
                    rows.append(f"{i + 1}\t0\t{name}\t0\t0")
                    continue
                cv2.imwrite(os.path.join(folder, "Label", f"{i:04d}_label.PNG"), _weak_label(mask))
                cv2.imwrite(os.path.join(folder, "Label", f"{i:04d}_mask.PNG"), mask * 255)
                rows.append(f"{i + 1}\t1\t{name}\t0\t{i:04d}_label.PNG")
            with open(os.path.join(folder, "Label", "Labels.txt"), "w", newline="\n") as f:
                f.write("\n".join(rows) + "\n")
            summary["classes"][cls][split] = {"images": n, "defective": n_def}
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "meta.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary
