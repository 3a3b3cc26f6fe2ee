"""Synthetic Tianchi-fabric (2019 Guangdong, round 2) generator.

Writes procedurally generated fabric images in *exactly* the on-disk layout of the real round-2
release, so the converter (:func:`defect_det.data.tianchi_convert.convert_fabric`), the loaders and
the trainers are exercised end to end without downloading anything::

    <out>/
      seen/                                   # texture families used for training (+ its test split)
        defect/<stem>/<stem>.jpg              # defect image, HxWx3 uint8 BGR JPEG
        defect/<stem>/template_<prefix>.jpg   # its template, prefix = stem.split('_')[0]
        normal/<stem>/<stem>.jpg              # defect-free image
        normal/<stem>/template_<prefix>.jpg
        Annotations/anno_train.json           # [{"name": "<stem>.jpg", "defect_name": <Chinese>,
                                              #   "bbox": [xmin, ymin, xmax, ymax],
                                              #   "segmentation": {"size": [H, W], "counts": <str>}},
                                              #  ...] one per box; "segmentation" is an extra key of
                                              #  the synthetic data (the real release has no masks)
      unseen_texture/                         # same layout, only the held-out texture families
      meta.json                               # generator version, config, per-image records

Model of the data
-----------------
* A *piece* is one texture instance (one family, with randomised colours, thread scale/period,
  rotation, yarn irregularity and noise), rendered once on a canvas a little larger than the image.
  Its template is the centre crop; its 1..3 defect (or normal) images are crops of the same canvas
  translated by ``(dx, dy)`` (uniform in ``[-max_shift, max_shift]`` per axis, sub-pixel by default)
  and rotated by up to ``max_rotation`` degrees, each with its own defects, illumination change and
  sensor noise. All images of a piece share the 16-hex-digit prefix ``<prefix>_<k>``. ``meta.json``
  records ``shift_dx``, ``shift_dy`` (``cv2.phaseCorrelate(template, image)`` measures about these)
  and ``rotation``; :func:`align_template` undoes them.
* Defects are painted on the aligned clean crop (float32 BGR in [0, 1]); each box is the tight
  bounding box of the pixels the defect visibly changed (difference > 25 % of the defect's own peak
  change), so boxes are tight, inside the image and non-degenerate. Those pixels are also the
  defect's exact mask, written as COCO compressed RLE (``pycocotools.mask.encode`` of the HxW uint8
  mask, ``counts`` as str): the mask's tight box is exactly ``bbox``. A mask is the set of pixels the
  defect changed when it was painted; a later defect of the same image may paint over part of it
  (boxes overlap by IoU <= 0.3), and the earlier mask is left as it was.
* Determinism: every random number comes from ``numpy.random.default_rng(SeedSequence([seed,
  release, kind, piece, ...]))``; the per-release plan (family, image count and primary defect type of
  every piece) comes from a release-level stream. Output bytes depend only on the config.

Texture families (:data:`TEXTURE_FAMILIES`): plain weave, twill, satin, herringbone, denim, knit,
yarn-dyed stripes, plaid, floral print, geometric print. Defect types (:data:`DEFECT_TYPES`, type ->
Chinese class of :data:`~defect_det.data.datasets.tianchi_categories.FABRIC_CATEGORIES`): 14 of the 15
fabric classes (all but 其他 "others"); ``misprinting`` and ``broken_figures`` need a printed family.

Public API: :class:`SyntheticFabricConfig`, :func:`generate_fabric_dataset`, :func:`make_preview`,
:func:`format_summary`, :func:`align_template`, :data:`TEXTURE_FAMILIES`, :data:`PRINTED_FAMILIES`,
:data:`DEFECT_TYPES`.
Only numpy, OpenCV and pycocotools (the RLE encoding) are needed.
"""
import dataclasses
import hashlib
import json
import math
import os
import shutil
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Optional, Tuple

import cv2
import numpy as np

from ..datasets.tianchi_categories import FABRIC_CATEGORIES

__all__ = [
    "DEFECT_TYPES",
    "PRINTED_FAMILIES",
    "TEXTURE_FAMILIES",
    "SyntheticFabricConfig",
    "align_template",
    "format_summary",
    "generate_fabric_dataset",
    "make_preview",
]

GENERATOR_NAME = "defect_det.data.synthetic.fabric"
GENERATOR_VERSION = "1.0"
RELEASES = ("seen", "unseen_texture")

TEXTURE_FAMILIES = (
    "plain_weave",
    "twill",
    "satin",
    "herringbone",
    "denim",
    "knit",
    "stripes",
    "plaid",
    "floral_print",
    "geometric_print",
)
"""Procedural texture families (names accepted by ``families`` / ``unseen_families``)."""

PRINTED_FAMILIES = ("floral_print", "geometric_print")
"""Families with a printed pattern layer (the only ones that can show misprinting / broken figures)."""

DEFECT_TYPES = OrderedDict([
    ("stained", "沾污"),             # irregular stain blob, few px .. half the image
    ("broken_figures", "错花"),      # printed figures recoloured / displaced in a region (prints only)
    ("water_mark", "水印"),          # low-contrast ring
    ("knots", "花毛"),               # fluffy tiny blob of fibres
    ("seam_allowance", "缝头"),      # stitched seam straight across the whole image
    ("joining_stencil_mark", "缝头印"),  # faint row of marks parallel to an edge
    ("insect", "虫粘"),              # tiny dark spot
    ("broken_hole", "破洞"),         # hole with frayed threads
    ("pleats", "褶子"),              # long fold: bright ridge + shadow
    ("flaw", "织疵"),                # thin long line along a thread direction
    ("misprinting", "漏印"),         # print missing / misregistered in a region (prints only)
    ("wax_spot", "蜡斑"),            # translucent glossy spot, weave smoothed
    ("color_shade", "色差"),         # large low-contrast colour shift (band / blob / edge region)
    ("crease_mark", "网折"),         # long pressed band across most of the image
])
"""Defect type name -> Chinese class name (as in ``anno_train.json``)."""

PRINT_ONLY_DEFECTS = ("misprinting", "broken_figures")
# painted first: they replace image content inside a region
_REGION_DEFECTS = ("color_shade", "misprinting", "broken_figures")

_ZH_TO_EN = {zh: en for en, zh in FABRIC_CATEGORIES}
assert all(zh in _ZH_TO_EN for zh in DEFECT_TYPES.values())


@dataclass
class SyntheticFabricConfig:
    """Parameters of :func:`generate_fabric_dataset` (all have defaults; see :meth:`validate`)."""

    seed: int = 0
    """Master seed (>= 0). Same config -> byte-identical output; another seed -> other data."""
    width: int = 320
    """Image width W in pixels (>= 32)."""
    height: int = 256
    """Image height H in pixels (>= 32)."""
    seen_pieces: int = 150
    """Defect pieces (texture instances, one template each) of the ``seen/`` release."""
    seen_normal_pieces: int = 30
    """Defect-free pieces of ``seen/`` (each gives ``images_per_piece`` normal images)."""
    unseen_pieces: int = 40
    """Defect pieces of ``unseen_texture/``."""
    unseen_normal_pieces: int = 10
    """Defect-free pieces of ``unseen_texture/``."""
    images_per_piece: Tuple[int, int] = (1, 3)
    """Inclusive (min, max) number of images sharing one template (uniform)."""
    families: Tuple[str, ...] = TEXTURE_FAMILIES
    """Texture families in use (subset of :data:`TEXTURE_FAMILIES`)."""
    unseen_families: Tuple[str, ...] = ("herringbone", "plaid")
    """Families held out of ``seen/`` and used only in ``unseen_texture/`` (subset of ``families``;
    at least one family must remain for ``seen/``)."""
    defect_types: Tuple[str, ...] = tuple(DEFECT_TYPES)
    """Defect types in use (subset of :data:`DEFECT_TYPES`)."""
    max_defects_per_image: int = 3
    """Upper bound of defects painted on one image (>= 1; most images get 1, some 2-3)."""
    max_shift: float = 3.0
    """Template misalignment: translation per axis uniform in [-max_shift, max_shift] px (0..32)."""
    subpixel_shift: bool = True
    """Sub-pixel translations (rounded to 1/100 px); False rounds them to whole pixels."""
    max_rotation: float = 0.0
    """Template misalignment: rotation uniform in [-max_rotation, max_rotation] degrees (0..10)."""
    illumination_gain: float = 0.04
    """Per image (defect, normal and template independently): gain uniform in 1 +- this."""
    illumination_offset: float = 0.02
    """Per image: additive offset uniform in +- this (fraction of full scale)."""
    illumination_gradient: float = 0.03
    """Per image: linear illumination ramp in a random direction, relative amplitude up to this."""
    noise_sigma: float = 2.0
    """Independent Gaussian sensor noise per image, in 0..255 grey levels."""
    contrast_scale: float = 1.0
    """Multiplies the contrast of every defect (1 = default random ranges; 0.25..4)."""
    jpeg_quality: int = 92
    """JPEG quality of every written image (cv2.IMWRITE_JPEG_QUALITY, 50..100)."""

    def validate(self):
        """Raise ``ValueError`` naming the offending field if the config is inconsistent."""
        def bad(name, msg):
            raise ValueError(f"SyntheticFabricConfig.{name}: {msg}")

        for name in ("seed", "width", "height", "seen_pieces", "seen_normal_pieces", "unseen_pieces",
                     "unseen_normal_pieces", "max_defects_per_image", "jpeg_quality"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                bad(name, f"must be an int, got {v!r}")
        if self.seed < 0:
            bad("seed", f"must be >= 0, got {self.seed}")
        for name in ("width", "height"):
            if getattr(self, name) < 32:
                bad(name, f"must be >= 32, got {getattr(self, name)}")
        for name in ("seen_pieces", "seen_normal_pieces", "unseen_pieces", "unseen_normal_pieces"):
            if getattr(self, name) < 0:
                bad(name, f"must be >= 0, got {getattr(self, name)}")
        ipp = tuple(self.images_per_piece)
        if len(ipp) != 2 or not all(isinstance(v, (int, np.integer)) for v in ipp) or not 1 <= ipp[0] <= ipp[1]:
            bad("images_per_piece", f"must be (min, max) ints with 1 <= min <= max, got {self.images_per_piece!r}")
        if self.max_defects_per_image < 1:
            bad("max_defects_per_image", f"must be >= 1, got {self.max_defects_per_image}")
        if isinstance(self.families, str) or isinstance(self.unseen_families, str) \
                or isinstance(self.defect_types, str):
            bad("families" if isinstance(self.families, str) else
                "unseen_families" if isinstance(self.unseen_families, str) else "defect_types",
                "must be a sequence of names, not a string")
        unknown = [f for f in self.families if f not in TEXTURE_FAMILIES]
        if unknown or not self.families:
            bad("families", f"unknown texture families {unknown} (known: {list(TEXTURE_FAMILIES)})"
                if unknown else "must not be empty")
        if len(set(self.families)) != len(self.families):
            bad("families", f"duplicate names in {list(self.families)}")
        unknown = [f for f in self.unseen_families if f not in TEXTURE_FAMILIES]
        if unknown:
            bad("unseen_families", f"unknown texture families {unknown} (known: {list(TEXTURE_FAMILIES)})")
        missing = [f for f in self.unseen_families if f not in self.families]
        if missing:
            bad("unseen_families", f"{missing} not in families")
        seen = self.seen_families()
        if not seen:
            bad("unseen_families", "covers all families: nothing left for the seen release")
        if not self.unseen_families and (self.unseen_pieces or self.unseen_normal_pieces):
            bad("unseen_families", "is empty but unseen_pieces / unseen_normal_pieces > 0")
        unknown = [t for t in self.defect_types if t not in DEFECT_TYPES]
        if unknown or not self.defect_types:
            bad("defect_types", f"unknown defect types {unknown} (known: {list(DEFECT_TYPES)})"
                if unknown else "must not be empty")
        for rel, fams, n in (("seen", seen, self.seen_pieces), ("unseen_texture", self.unseen_families,
                                                                  self.unseen_pieces)):
            if n and not any(_applicable_types(f, self.defect_types) for f in fams):
                bad("defect_types", f"no defect type applies to the {rel} families {list(fams)} "
                    f"({PRINT_ONLY_DEFECTS} need one of {PRINTED_FAMILIES})")
        for name, lo, hi in (("max_shift", 0.0, 32.0), ("max_rotation", 0.0, 10.0),
                             ("illumination_gain", 0.0, 0.5), ("illumination_offset", 0.0, 0.5),
                             ("illumination_gradient", 0.0, 0.5), ("noise_sigma", 0.0, 50.0),
                             ("contrast_scale", 0.25, 4.0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) \
                    or not math.isfinite(v):
                bad(name, f"must be a finite number, got {v!r}")
            if not lo <= v <= hi:
                bad(name, f"must be in [{lo}, {hi}], got {v}")
        if not 50 <= self.jpeg_quality <= 100:
            bad("jpeg_quality", f"must be in [50, 100], got {self.jpeg_quality}")
        return self

    def seen_families(self):
        """Families of the ``seen/`` release (``families`` minus ``unseen_families``), in order."""
        return tuple(f for f in self.families if f not in self.unseen_families)

    def to_dict(self):
        """JSON-able dict of all fields (tuples as lists)."""
        d = dataclasses.asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


def _applicable_types(family, types):
    return [t for t in types if family in PRINTED_FAMILIES or t not in PRINT_ONLY_DEFECTS]


# ----------------------------------------------------------------------------------------------
# small numeric helpers (all images float32 HxWx3 BGR in [0, 1] unless stated)
# ----------------------------------------------------------------------------------------------
_TAB = 1024  # length of per-thread lookup tables


def _grid(h, w):
    """Pixel-centre coordinate grids ``(x, y)``, each HxW float32."""
    y, x = np.mgrid[0:h, 0:w]
    return x.astype(np.float32), y.astype(np.float32)


def _smooth_noise(rng, h, w, cell_y, cell_x=None):
    """Band-limited noise, HxW float32 with ~unit std; ``cell_*`` = feature size in px."""
    cell_x = cell_y if cell_x is None else cell_x
    gh = max(2, int(math.ceil(h / max(cell_y, 1.0))) + 1)
    gw = max(2, int(math.ceil(w / max(cell_x, 1.0))) + 1)
    g = rng.standard_normal((gh, gw)).astype(np.float32)
    n = cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC)
    return n / (float(n.std()) + 1e-6)


def _hsv_color(rng, hue, sat, val):
    """A BGR float32 colour (3,) from HSV ranges (hue in degrees, sat/val in [0, 1])."""
    hsv = np.array([[[rng.uniform(*hue) % 360.0, rng.uniform(*sat), rng.uniform(*val)]]], np.float32)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)


def _fabric_color(rng, val=(0.3, 0.95)):
    """A plausible dyed-fabric colour: mostly low/medium saturation, some whites and darks."""
    r = rng.random()
    if r < 0.25:   # whites / greys / ecru
        return _hsv_color(rng, (20, 60), (0.0, 0.15), (max(val[0], 0.55), val[1]))
    if r < 0.4:    # darks (navy, black, brown, bottle green)
        return _hsv_color(rng, (0, 360), (0.2, 0.7), (0.18, 0.4))
    return _hsv_color(rng, (0, 360), (0.15, 0.75), val)


def _thread_table(rng, color, irregularity, chroma=0.02):
    """Per-thread colour table (_TAB, 3) float32: ``color`` with per-thread brightness jitter."""
    j = 1.0 + irregularity * rng.standard_normal((_TAB, 1)).astype(np.float32)
    c = 1.0 + chroma * rng.standard_normal((_TAB, 3)).astype(np.float32)
    return np.clip(color[None, :] * j * c, 0.0, 1.0).astype(np.float32)


def _sett_table(rng, colors, counts_range, irregularity, mirror=True):
    """Yarn-dyed colour sequence (stripes / tartan sett) per thread, (_TAB, 3) float32."""
    n = len(colors)
    seq = []
    order = list(range(n))
    for ci in order:
        seq += [ci] * int(rng.integers(counts_range[0], counts_range[1] + 1))
    if mirror:
        seq = seq + seq[::-1]
    seq = np.array(seq)
    idx = seq[np.arange(_TAB) % len(seq)]
    cols = np.stack(colors).astype(np.float32)[idx]
    j = 1.0 + irregularity * rng.standard_normal((_TAB, 1)).astype(np.float32)
    return np.clip(cols * j, 0, 1).astype(np.float32)


def _rot_uv(x, y, angle_deg, rng, warp_amp, warp_cell):
    """Rotated fabric coordinates ``(u, v)`` (HxW float32) with low-frequency yarn waviness."""
    h, w = x.shape
    if warp_amp > 0:
        x = x + warp_amp * _smooth_noise(rng, h, w, warp_cell)
        y = y + warp_amp * _smooth_noise(rng, h, w, warp_cell)
    a = math.radians(angle_deg)
    c, s = math.cos(a), math.sin(a)
    return (c * x + s * y).astype(np.float32), (-s * x + c * y).astype(np.float32)


def _weave(u, v, pu, pv, up_fn, warp_tab, weft_tab, contrast, gamma=0.7, along=0.3):
    """
    Render a woven structure.

    Args:
        u, v: HxW float32 fabric coordinates (warp threads are lines of constant u).
        pu, pv: thread pitch in px of warp / weft.
        up_fn: ``f(i, j) -> bool array`` warp on top at warp thread i, weft thread j (int64 arrays).
        warp_tab, weft_tab: (_TAB, 3) per-thread colours.
        contrast: depth of the yarn shading (0 flat .. 1 black gaps).

    Returns:
        (img HxWx3 float32 in [0, 1], shade HxW float32 in [0, 1])
    """
    fi = u / pu
    fj = v / pv
    i = np.floor(fi)
    j = np.floor(fj)
    fu = fi - i
    fv = fj - j
    i = i.astype(np.int64)
    j = j.astype(np.int64)
    up = up_fn(i, j)
    su = np.sin(np.pi * fu)
    sv = np.sin(np.pi * fv)
    across = np.where(up, su, sv) ** gamma
    # a float dips only where it interlaces, i.e. where the next cell along the yarn is not on top:
    # continuous floats give twill / satin their ribs instead of a brick pattern
    dip_warp = np.where(fv < 0.5, ~up_fn(i, j - 1), ~up_fn(i, j + 1))
    dip_weft = np.where(fu < 0.5, up_fn(i - 1, j), up_fn(i + 1, j))
    along_s = np.where(up, np.where(dip_warp, sv, 1.0), np.where(dip_weft, su, 1.0))
    shade = (across * ((1.0 - along) + along * along_s)).astype(np.float32)
    col = np.where(up[..., None], warp_tab[np.mod(i, _TAB)], weft_tab[np.mod(j, _TAB)])
    img = col * ((1.0 - contrast) + contrast * shade)[..., None]
    return img.astype(np.float32), shade


def _twill_fn(n_up, n_down, direction=1):
    r = n_up + n_down
    return lambda i, j: np.mod(direction * i - j, r) < n_up


def _aa(d, width=1.0):
    """Anti-aliased coverage from a signed distance ``d`` (px, > 0 inside)."""
    return np.clip(0.5 + d / width, 0.0, 1.0).astype(np.float32)


class _Texture:
    """One rendered texture instance on the canvas (all arrays Hc x Wc [x 3] float32 in [0, 1])."""

    def __init__(self, image, thread_angle, params, ground=None, print_premul=None, print_alpha=None,
                 motif_period=None):
        self.image = image
        self.thread_angle = thread_angle        # degrees; thread directions are angle and angle + 90
        self.params = params
        self.ground = ground                    # printed families: fabric without the print
        self.print_premul = print_premul        # premultiplied print colour
        self.print_alpha = print_alpha          # print coverage, HxW
        self.motif_period = motif_period


def _finish(img, rng, h, w, fibre=(0.006, 0.02), mottle=(0.01, 0.04)):
    """Fibre noise + low-frequency mottling (dye unevenness)."""
    f = rng.uniform(*fibre)
    n = rng.standard_normal((h, w, 1)).astype(np.float32)
    n = cv2.GaussianBlur(n, (0, 0), 0.6)[..., None] * f * 2.0
    m = _smooth_noise(rng, h, w, rng.uniform(40, 140))[..., None] * rng.uniform(*mottle)
    return np.clip(img * (1.0 + m) + n, 0.0, 1.0).astype(np.float32)


def _render_texture(family, h, w, rng, ks):
    """Render one instance of ``family`` on an h x w canvas; ``ks`` = image-size scale (S / 256)."""
    x, y = _grid(h, w)
    kt = float(np.clip(ks, 0.5, 4.0)) ** 0.5      # thread pitch scale
    irr = rng.uniform(0.02, 0.10)                 # per-thread brightness irregularity
    warp_amp = rng.uniform(0.0, 1.5)
    angle = rng.uniform(-6, 6)
    if family not in PRINTED_FAMILIES and family != "knit" and rng.random() < 0.3:
        angle += 90.0
    params = {"angle": round(angle, 3), "irregularity": round(irr, 4)}
    u, v = _rot_uv(x, y, angle, rng, warp_amp, rng.uniform(15, 60))

    if family in ("plain_weave", "twill", "satin", "herringbone", "denim"):
        pu = rng.uniform(2.6, 5.5) * kt
        pv = pu * rng.uniform(0.8, 1.25)
        c1 = _fabric_color(rng)
        c2 = c1 * rng.uniform(0.85, 1.1)
        contrast = rng.uniform(0.25, 0.6)
        if family == "plain_weave":
            if rng.random() < 0.3:  # chambray / two-tone
                c2 = _fabric_color(rng)
            fn = lambda i, j: np.mod(i + j, 2) == 0  # noqa: E731
            params["weave"] = "1/1"
        elif family == "twill":
            nu, nd = [(2, 1), (2, 2), (3, 1), (1, 3), (1, 2)][int(rng.integers(5))]
            d = int(rng.choice([-1, 1]))
            fn = _twill_fn(nu, nd, d)
            params["weave"] = f"{nu}/{nd}"
            if rng.random() < 0.4:
                c2 = _fabric_color(rng)
        elif family == "satin":
            r, step = [(5, 2), (5, 3), (8, 3), (8, 5)][int(rng.integers(4))]
            warp_faced = bool(rng.random() < 0.5)
            fn = (lambda i, j: np.mod(i * step - j, r) != 0) if warp_faced else \
                (lambda i, j: np.mod(i * step - j, r) == 0)
            contrast = rng.uniform(0.15, 0.35)
            pu = rng.uniform(2.2, 4.0) * kt
            pv = pu * rng.uniform(0.8, 1.25)
            params["weave"] = f"satin{r}/{step}"
        elif family == "herringbone":
            nu, nd = [(2, 2), (2, 1), (3, 1)][int(rng.integers(3))]
            r = nu + nd
            block = int(rng.integers(3, 8)) * r
            fn = lambda i, j: np.mod(np.where(np.mod(i // block, 2) == 0, i, -i) - j, r) < nu  # noqa: E731
            pu = rng.uniform(2.4, 4.2) * kt
            pv = pu * rng.uniform(0.85, 1.2)
            c2 = np.clip(c1 * rng.uniform(0.45, 0.7) if c1.mean() > 0.45 else c1 + rng.uniform(0.25, 0.45),
                         0, 1).astype(np.float32)
            contrast = rng.uniform(0.3, 0.55)
            params["weave"] = f"herringbone{nu}/{nd}x{block}"
        else:  # denim
            d = int(rng.choice([-1, 1]))
            fn = _twill_fn(3, 1, d)
            c1 = _hsv_color(rng, (205, 232), (0.45, 0.9), (0.22, 0.6))       # indigo warp
            c2 = _hsv_color(rng, (30, 50), (0.03, 0.15), (0.7, 0.92))        # ecru weft
            irr = rng.uniform(0.06, 0.16)
            contrast = rng.uniform(0.3, 0.5)
            params["weave"] = "3/1 denim"
        warp_tab = _thread_table(rng, c1, irr)
        weft_tab = _thread_table(rng, c2, irr * 0.7)
        img, shade = _weave(u, v, pu, pv, fn, warp_tab, weft_tab, contrast, rng.uniform(0.5, 1.0))
        if family == "denim" or rng.random() < 0.3:  # slubs / streaks along the warp
            vertical = abs(math.cos(math.radians(angle))) > 0.7
            cy, cx = (rng.uniform(20, 60), pu) if vertical else (pu, rng.uniform(20, 60))
            amp = rng.uniform(0.05, 0.14) if family == "denim" else rng.uniform(0.02, 0.06)
            img = img * (1.0 + amp * _smooth_noise(rng, h, w, cy, cx))[..., None]
        if family == "satin":  # sheen
            img = img * (1.0 + rng.uniform(0.03, 0.08) * _smooth_noise(rng, h, w, rng.uniform(60, 160)))[..., None]
        params.update(pitch=round(pu, 3), colors=[c1.round(3).tolist(), c2.round(3).tolist()])
        return _Texture(_finish(img, rng, h, w), angle, params)

    if family in ("stripes", "plaid"):
        ncol = int(rng.integers(2, 5))
        base = _fabric_color(rng)
        cols = [base]
        for _ in range(ncol - 1):
            if rng.random() < 0.5:
                cols.append(np.clip(base * rng.uniform(0.4, 1.5), 0, 1).astype(np.float32))
            else:
                cols.append(_fabric_color(rng))
        pu = rng.uniform(2.4, 4.5) * kt
        pv = pu * rng.uniform(0.85, 1.2)
        counts = (2, int(rng.integers(6, 22)))
        warp_tab = _sett_table(rng, cols, counts, irr * 0.5, mirror=family == "plaid" or rng.random() < 0.5)
        if family == "plaid":
            weft_tab = warp_tab if rng.random() < 0.6 else _sett_table(rng, cols, counts, irr * 0.5)
            fn = _twill_fn(2, 2, int(rng.choice([-1, 1])))
        else:
            weft_tab = _thread_table(rng, cols[int(rng.integers(len(cols)))], irr * 0.5)
            fn = (lambda i, j: np.mod(i + j, 2) == 0) if rng.random() < 0.5 else _twill_fn(2, 1)
        img, _ = _weave(u, v, pu, pv, fn, warp_tab, weft_tab, rng.uniform(0.2, 0.45), rng.uniform(0.5, 1.0))
        params.update(pitch=round(pu, 3), colors=[c.round(3).tolist() for c in cols])
        return _Texture(_finish(img, rng, h, w), angle, params)

    if family == "knit":
        pc = rng.uniform(4.0, 8.0) * kt
        pr = pc * rng.uniform(0.5, 0.8)
        fi = u / pc
        i = np.floor(fi)
        fu = (fi - i - 0.5).astype(np.float32)
        ii = np.mod(i.astype(np.int64), _TAB)
        jit = (1.0 + irr * rng.standard_normal(_TAB).astype(np.float32))[ii]
        loops = 0.5 + 0.5 * np.cos(2 * np.pi * (v / pr + 1.1 * np.abs(fu)))
        gap = np.abs(np.cos(np.pi * fu)) ** 0.6
        shade = ((0.3 + 0.7 * loops ** 0.7) * gap * jit).astype(np.float32)
        c1 = _fabric_color(rng)
        contrast = rng.uniform(0.35, 0.6)
        img = c1[None, None, :] * ((1 - contrast) + contrast * shade)[..., None]
        if rng.random() < 0.4:  # heather / melange yarn
            c2 = _fabric_color(rng)
            mix = (_smooth_noise(rng, h, w, 1.5) > rng.uniform(0.3, 1.2)).astype(np.float32)
            mix = cv2.GaussianBlur(mix, (0, 0), 0.7)[..., None] * 0.6
            img = img * (1 - mix) + mix * c2[None, None, :] * ((1 - contrast) + contrast * shade)[..., None]
        params.update(pitch=round(pc, 3), colors=[c1.round(3).tolist()])
        return _Texture(_finish(img.astype(np.float32), rng, h, w), angle, params)

    if family in PRINTED_FAMILIES:
        pu = rng.uniform(2.2, 3.6) * kt
        g = _fabric_color(rng, val=(0.6, 0.97)) if rng.random() < 0.8 else _fabric_color(rng)
        ground, gshade = _weave(u, v, pu, pu * rng.uniform(0.85, 1.2), lambda i, j: np.mod(i + j, 2) == 0,
                                _thread_table(rng, g, irr * 0.5), _thread_table(rng, g, irr * 0.5),
                                rng.uniform(0.12, 0.3), 0.7)
        ground = _finish(ground, rng, h, w, mottle=(0.005, 0.02))
        pangle = rng.uniform(-15, 15) if rng.random() < 0.8 else 45.0 + rng.uniform(-5, 5)
        pu_, pv_ = _rot_uv(x, y, pangle, rng, rng.uniform(0.0, 0.8), rng.uniform(20, 60))
        period = rng.uniform(26, 80) * ks
        gmean = float(g.mean())

        def ink():
            # print colours contrast with the ground
            if gmean > 0.5:
                return _hsv_color(rng, (0, 360), (0.35, 0.95), (0.2, 0.75))
            return _hsv_color(rng, (0, 360), (0.1, 0.6), (0.7, 1.0))

        if family == "floral_print":
            layers, desc = _floral_layers(pu_, pv_, period, rng, ink)
        else:
            layers, desc = _geometric_layers(pu_, pv_, period, rng, ink)
        premul = np.zeros((h, w, 3), np.float32)
        alpha = np.zeros((h, w), np.float32)
        inkshade = (0.8 + 0.2 * gshade)[..., None]
        for a, c in layers:
            a = a * rng.uniform(0.85, 1.0)
            premul = premul * (1 - a[..., None]) + a[..., None] * c[None, None, :] * inkshade
            alpha = alpha * (1 - a) + a
        img = ground * (1 - alpha[..., None]) + premul
        params.update(pitch=round(pu, 3), motif=desc, motif_period=round(period, 2), print_angle=round(pangle, 2),
                      colors=[g.round(3).tolist()] + [c.round(3).tolist() for _, c in layers])
        return _Texture(img.astype(np.float32), angle, params, ground=ground, print_premul=premul,
                        print_alpha=alpha, motif_period=period)
    raise ValueError(f"unknown texture family {family!r}")


def _lattice(u, v, period, halfdrop, offset=(0.0, 0.0)):
    """Local motif coordinates (px from the cell centre) and the cell ids, all HxW."""
    a = u / period + offset[0]
    ca = np.floor(a)
    b = v / period + offset[1] + (0.5 * np.mod(ca, 2) if halfdrop else 0.0)
    cb = np.floor(b)
    return ((a - ca - 0.5) * period).astype(np.float32), ((b - cb - 0.5) * period).astype(np.float32), ca, cb


def _floral_layers(u, v, period, rng, ink):
    """Repeating flowers (petals, centre, leaves) + small filler dots: list of (alpha HxW, colour)."""
    lx, ly, ca, cb = _lattice(u, v, period, rng.random() < 0.6)
    rot_tab = rng.uniform(0, 2 * np.pi, 97).astype(np.float32)
    rot = rot_tab[np.mod((ca * 31 + cb * 17).astype(np.int64), 97)] * rng.uniform(0.0, 1.0)
    r = np.hypot(lx, ly)
    th = np.arctan2(ly, lx) + rot
    r0 = period * rng.uniform(0.16, 0.3)
    npet = int(rng.integers(4, 9))
    depth = rng.uniform(0.3, 0.7)
    rf = r0 * ((1 - depth) + depth * np.abs(np.cos(npet * th / 2)) ** rng.uniform(0.5, 2.0))
    petal_col, centre_col, leaf_col = ink(), ink(), _hsv_color(rng, (70, 160), (0.3, 0.8), (0.25, 0.6))
    layers = []
    # two leaves
    la, lb = r0 * rng.uniform(0.5, 0.8), r0 * rng.uniform(0.2, 0.35)
    leaf = np.zeros_like(r)
    phi0 = rng.uniform(0, 2 * np.pi)
    for phi in (phi0, phi0 + rng.uniform(2.2, 4.0)):
        c, s = math.cos(phi), math.sin(phi)
        px = c * lx + s * ly - r0 * 1.25
        py = -s * lx + c * ly
        nrm = np.sqrt((px / la) ** 2 + (py / lb) ** 2)
        leaf = np.maximum(leaf, _aa((1 - nrm) * lb))
    layers.append((leaf, leaf_col))
    layers.append((_aa(rf - r), petal_col))
    layers.append((_aa(r0 * rng.uniform(0.18, 0.32) - r), centre_col))
    if rng.random() < 0.7:  # filler dots between flowers
        dx, dy, _, _ = _lattice(u, v, period, False, (0.5, 0.5))
        layers.append((_aa(period * rng.uniform(0.03, 0.07) - np.hypot(dx, dy)), ink()))
    return layers, f"flower{npet}"


def _geometric_layers(u, v, period, rng, ink):
    """Repeating geometric prints (dots, diamonds, zigzag, rings, squares): list of (alpha, colour)."""
    kinds = ["dots", "diamonds", "zigzag", "rings", "squares"]
    first = kinds[int(rng.integers(len(kinds)))]
    chosen = [first]
    if rng.random() < 0.5:
        chosen.append(kinds[int(rng.integers(len(kinds)))])
    layers = []
    for n, kind in enumerate(chosen):
        off = (0.0, 0.0) if n == 0 else (0.5, 0.5)
        p = period * (1.0 if n == 0 else rng.uniform(0.5, 1.0))
        lx, ly, _, _ = _lattice(u, v, p, rng.random() < 0.5, off)
        if kind == "dots":
            a = _aa(p * rng.uniform(0.12, 0.3) - np.hypot(lx, ly))
        elif kind == "diamonds":
            rr = p * rng.uniform(0.2, 0.42)
            a = _aa(rr - (np.abs(lx) + np.abs(ly)) * 0.7071)
            if rng.random() < 0.5:
                a = a * (1 - _aa(rr * 0.5 - (np.abs(lx) + np.abs(ly)) * 0.7071))
        elif kind == "zigzag":
            amp = rng.uniform(0.15, 0.4) * p
            zz = amp * np.abs(np.mod(u / (p * 0.5), 2.0) - 1.0)
            d = np.mod(v - zz, p) - p / 2
            a = _aa(p * rng.uniform(0.05, 0.15) - np.abs(d))
        elif kind == "rings":
            rr = p * rng.uniform(0.2, 0.38)
            a = _aa(p * rng.uniform(0.03, 0.08) - np.abs(np.hypot(lx, ly) - rr))
        else:  # squares (outlined or filled)
            rr = p * rng.uniform(0.15, 0.35)
            m = np.maximum(np.abs(lx), np.abs(ly))
            a = _aa(rr - m) if rng.random() < 0.5 else _aa(p * 0.05 - np.abs(m - rr))
        layers.append((a, ink()))
    return layers, "+".join(chosen)


# ----------------------------------------------------------------------------------------------
# defects: each paints on an HxWx3 float32 image and returns the new image (input untouched)
# ----------------------------------------------------------------------------------------------
class _Ctx:
    """What a defect painter may use: image size, scale, texture layers aligned with the image."""

    def __init__(self, h, w, thread_angle, layers, motif_period, contrast_scale):
        self.h, self.w = h, w
        self.S = min(h, w)
        self.k = self.S / 256.0
        self.kp = max(self.k, 0.5)               # pixel-size scale with a floor for tiny images
        self.thread_angle = thread_angle
        self.layers = layers                     # None or dict ground / print_premul / print_alpha
        self.motif_period = motif_period
        self.cs = contrast_scale


def _loguniform(rng, lo, hi):
    lo = max(lo, 1e-3)
    hi = max(hi, lo * 1.0001)
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _roi(cx, cy, rad, h, w):
    return (max(0, int(math.floor(cx - rad))), min(w, int(math.ceil(cx + rad)) + 1),
            max(0, int(math.floor(cy - rad))), min(h, int(math.ceil(cy + rad)) + 1))


def _blob(h, w, cx, cy, rx, ry, ang, rng, rough=0.3, edge=1.0):
    """Irregular soft blob mask, HxW float32 in [0, 1] (1 inside)."""
    m = np.zeros((h, w), np.float32)
    rad = max(rx, ry) * (1.0 + 2.5 * rough) + 3 * edge + 2
    x0, x1, y0, y1 = _roi(cx, cy, rad, h, w)
    ks = np.arange(2, 7)
    amps = rough * rng.standard_normal(5) / ks
    ph = rng.uniform(0, 2 * np.pi, 5)
    if x1 <= x0 or y1 <= y0:
        return m
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dx, dy = xx - cx, yy - cy
    c, s = math.cos(ang), math.sin(ang)
    px = (c * dx + s * dy) / rx
    py = (-s * dx + c * dy) / ry
    rr = np.hypot(px, py)
    th = np.arctan2(py, px)
    radius = 1.0 + sum(amps[n] * np.cos(ks[n] * th + ph[n]) for n in range(5))
    m[y0:y1, x0:x1] = _aa((radius - rr) * 0.5 * (rx + ry), edge)
    return m


def _rand_center(rng, h, w, margin=0.0):
    return rng.uniform(margin, w - margin), rng.uniform(margin, h - margin)


def _contrast_color(rng, bg):
    """A stain / fluff colour that contrasts with the local background colour ``bg`` (3,)."""
    if float(bg.mean()) > 0.45:
        return _hsv_color(rng, (10, 50), (0.2, 0.8), (0.05, 0.45))
    return _hsv_color(rng, (20, 60), (0.0, 0.4), (0.65, 0.95))


def _local_mean(img, cx, cy, rad):
    h, w = img.shape[:2]
    x0, x1, y0, y1 = _roi(cx, cy, max(rad, 3), h, w)
    return img[y0:y1, x0:x1].reshape(-1, 3).mean(0)


def _lerp(img, target, alpha):
    a = alpha[..., None] if alpha.ndim == 2 else alpha
    return (img * (1 - a) + target * a).astype(np.float32)


def _stroke_mask(h, w, polylines, thickness=1, circles=()):
    """Anti-aliased mask HxW float32 of polylines [(N,2) float px] and filled circles (cx, cy, r)."""
    m = np.zeros((h, w), np.uint8)
    sh = 4
    for pts in polylines:
        p = np.round(np.asarray(pts, np.float64) * (1 << sh)).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(m, [p], False, 255, int(thickness), cv2.LINE_AA, sh)
    for cx, cy, r in circles:
        cv2.circle(m, (int(round(cx * 16)), int(round(cy * 16))), max(1, int(round(r * 16))), 255, -1,
                   cv2.LINE_AA, sh)
    return m.astype(np.float32) / 255.0


def _line_coords(h, w, cx, cy, ang):
    """Along (t) and across (d) coordinates (HxW float32) of a line through (cx, cy) at ``ang`` rad."""
    x, y = _grid(h, w)
    c, s = math.cos(ang), math.sin(ang)
    return (c * (x - cx) + s * (y - cy)), (-s * (x - cx) + c * (y - cy))


def _end_window(t, half_len, fade):
    return np.clip((half_len - np.abs(t)) / max(fade, 1e-3), 0.0, 1.0).astype(np.float32)


def _d_stained(img, ctx, rng):
    h, w, S = ctx.h, ctx.w, ctx.S
    size = _loguniform(rng, max(5.0, 0.025 * S), 0.8 * S)
    cx, cy = _rand_center(rng, h, w)
    rx = size / 2
    m = _blob(h, w, cx, cy, rx, rx * rng.uniform(0.4, 1.0), rng.uniform(0, np.pi), rng,
              rng.uniform(0.15, 0.45), rng.uniform(1.0, max(1.2, size * 0.08)))
    m *= (0.65 + 0.35 * np.clip(0.5 + 0.5 * _smooth_noise(rng, h, w, max(3.0, size / 4)), 0, 1))
    col = _contrast_color(rng, _local_mean(img, cx, cy, rx))
    a = min(0.95, rng.uniform(0.35, 0.75) * ctx.cs)
    target = col[None, None, :] * (0.75 + 0.25 * img / (img.mean() + 1e-3))
    return _lerp(img, target, a * m)


def _d_water_mark(img, ctx, rng):
    h, w, S = ctx.h, ctx.w, ctx.S
    size = _loguniform(rng, max(8.0, 0.07 * S), 0.8 * S)
    cx, cy = _rand_center(rng, h, w)
    rx = size / 2
    ry = rx * rng.uniform(0.5, 1.0)
    ring_w = max(1.5, rx * rng.uniform(0.06, 0.18))
    outer = _blob(h, w, cx, cy, rx, ry, rng.uniform(0, np.pi), rng, rng.uniform(0.1, 0.3), ring_w)
    # ring = band of the blob's soft edge: outer - eroded copy
    k = max(1, int(round(ring_w * 1.5)))
    inner = cv2.erode(outer, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1)))
    ring = cv2.GaussianBlur(np.clip(outer - inner, 0, 1), (0, 0), max(0.7, ring_w * 0.3))
    field_ = ring + rng.uniform(0.0, 0.35) * inner
    c = min(0.8, rng.uniform(0.2, 0.4) * ctx.cs) * (1 if rng.random() < 0.3 else -1)
    tint = 1.0 + 0.3 * rng.uniform(-1, 1, 3).astype(np.float32)
    return np.clip(img * (1.0 + c * field_[..., None] * tint), 0, 1).astype(np.float32)


def _d_knots(img, ctx, rng):
    h, w, kp = ctx.h, ctx.w, ctx.kp
    cx, cy = _rand_center(rng, h, w, 2)
    core = rng.uniform(0.8, 2.0) * kp
    lines = []
    for _ in range(int(rng.integers(4, 11))):
        a = rng.uniform(0, 2 * np.pi)
        p = np.array([cx + core * 0.6 * math.cos(a), cy + core * 0.6 * math.sin(a)])
        pts = [p.copy()]
        seg = rng.uniform(1.0, 2.5) * kp
        for _ in range(int(rng.integers(1, 4))):
            a += rng.uniform(-0.8, 0.8)
            p = p + seg * np.array([math.cos(a), math.sin(a)])
            pts.append(p.copy())
        lines.append(np.array(pts))
    m = np.maximum(_stroke_mask(h, w, lines, 1) * rng.uniform(0.6, 0.9),
                   _stroke_mask(h, w, [], 1, [(cx, cy, core)]))
    col = _contrast_color(rng, _local_mean(img, cx, cy, 6)) if rng.random() < 0.7 else _fabric_color(rng)
    return _lerp(img, np.broadcast_to(col, img.shape), min(1.0, rng.uniform(0.75, 1.0) * ctx.cs) * m)


def _d_seam_allowance(img, ctx, rng):
    vertical = rng.random() < 0.3
    im = img.transpose(1, 0, 2) if vertical else img
    h, w = im.shape[:2]
    kp = ctx.kp
    y0 = rng.uniform(0.08, 0.92) * h
    t = rng.uniform(4, 14) * kp
    slope = math.tan(math.radians(rng.uniform(-1.5, 1.5)))
    x, y = _grid(h, w)
    d = y - (y0 + slope * (x - w / 2))
    band = _aa(t / 2 - np.abs(d), 1.2)
    out = im.copy()
    # overlapping layer: darker or lighter, with a dark folded edge on one side
    g = 1.0 + min(0.5, rng.uniform(0.1, 0.3) * ctx.cs) * (-1 if rng.random() < 0.7 else 1)
    out = out * (1 + (g - 1) * band[..., None])
    edge_side = rng.choice([-1, 1])
    edge = np.exp(-0.5 * ((d - edge_side * t / 2) / (0.7 * kp)) ** 2)
    out = out * (1 - min(0.8, rng.uniform(0.25, 0.5) * ctx.cs) * edge[..., None])
    # stitches: dashes along the band
    per = rng.uniform(4, 10) * kp
    duty = rng.uniform(0.45, 0.75)
    phase = rng.uniform(0, per)
    dash = _aa((duty * per / 2 - np.abs(np.mod(x - phase, per) - per / 2)), 1.0)
    soff = rng.uniform(-0.25, 0.25) * t
    sth = rng.uniform(0.5, 0.9) * max(1.0, kp)
    stitch = dash * np.exp(-0.5 * ((d - soff) / sth) ** 2)
    scol = _contrast_color(rng, out[int(np.clip(y0, 0, h - 1))].mean(0)) if rng.random() < 0.6 \
        else _fabric_color(rng)
    out = _lerp(out, np.broadcast_to(scol, out.shape), 0.9 * stitch)
    out = np.clip(out, 0, 1).astype(np.float32)
    return np.ascontiguousarray(out.transpose(1, 0, 2)) if vertical else out


def _d_joining_stencil_mark(img, ctx, rng):
    vertical = rng.random() < 0.3
    im = img.transpose(1, 0, 2) if vertical else img
    h, w = im.shape[:2]
    kp = ctx.kp
    y0 = rng.uniform(0.05, 0.95) * h
    length = rng.uniform(0.2, 1.0) * w
    x0 = rng.uniform(-0.1 * w, w - 0.5 * length)
    x, y = _grid(h, w)
    d = y - y0
    per = rng.uniform(5, 14) * kp
    dl = per * rng.uniform(0.3, 0.7)
    th = rng.uniform(0.8, 2.5) * kp
    phase = rng.uniform(0, per)
    dash = _aa(dl / 2 - np.abs(np.mod(x - phase, per) - per / 2), 1.0)
    m = dash * _aa(th / 2 + 0.5 - np.abs(d), 1.0) * _end_window(x - (x0 + length / 2), length / 2, 2.0)
    m = m + 0.35 * np.exp(-0.5 * (d / (th * 1.5)) ** 2) * _end_window(x - (x0 + length / 2), length / 2, 3.0)
    c = min(0.7, rng.uniform(0.18, 0.4) * ctx.cs)
    out = np.clip(im * (1 - c * np.clip(m, 0, 1)[..., None]), 0, 1).astype(np.float32)
    return np.ascontiguousarray(out.transpose(1, 0, 2)) if vertical else out


def _d_insect(img, ctx, rng):
    h, w, kp = ctx.h, ctx.w, ctx.kp
    cx, cy = _rand_center(rng, h, w, 1)
    rx = rng.uniform(1.2, 4.0) * kp
    ry = rx * rng.uniform(0.45, 0.8)
    ang = rng.uniform(0, np.pi)
    m = _blob(h, w, cx, cy, rx, ry, ang, rng, 0.08, 0.7)
    if rx > 1.8 and rng.random() < 0.6:  # legs
        legs = []
        for side in (-1, 1):
            for f in (-0.5, 0.0, 0.5):
                a = ang + side * np.pi / 2 + rng.uniform(-0.4, 0.4)
                bx = cx + f * rx * math.cos(ang)
                by = cy + f * rx * math.sin(ang)
                ln = rng.uniform(0.8, 1.6) * ry + 1
                legs.append(np.array([[bx, by], [bx + ln * math.cos(a), by + ln * math.sin(a)]]))
        m = np.maximum(m, 0.6 * _stroke_mask(h, w, legs, 1))
    col = _hsv_color(rng, (0, 40), (0.2, 0.8), (0.02, 0.25))
    if float(_local_mean(img, cx, cy, 4).mean()) < 0.3:
        col = _hsv_color(rng, (30, 60), (0.1, 0.5), (0.6, 0.9))
    return _lerp(img, np.broadcast_to(col, img.shape), min(1.0, rng.uniform(0.8, 1.0) * ctx.cs) * m)


def _d_broken_hole(img, ctx, rng):
    h, w, S, kp = ctx.h, ctx.w, ctx.S, ctx.kp
    size = _loguniform(rng, 4.0 * kp, 0.3 * S)
    cx, cy = _rand_center(rng, h, w)
    rx = size / 2
    ry = rx * rng.uniform(0.45, 1.0)
    ang = rng.uniform(0, np.pi)
    m = _blob(h, w, cx, cy, rx, ry, ang, rng, rng.uniform(0.25, 0.5), 0.8)
    yarn = _local_mean(img, cx, cy, rx * 2)
    bg = _hsv_color(rng, (0, 360), (0.0, 0.3), (0.02, 0.2)) if rng.random() < 0.8 else \
        _hsv_color(rng, (0, 360), (0.0, 0.1), (0.9, 1.0))
    # shadow ring around the hole
    shadow = cv2.GaussianBlur(m, (0, 0), 1.0 + 0.1 * rx)
    out = img * (1 - 0.25 * np.clip(shadow - m, 0, 1))[..., None]
    out = _lerp(out, np.broadcast_to(bg, img.shape), m)
    # frayed threads: short strands along the thread directions, crossing the hole edge
    strands = []
    n = int(rng.integers(4, 10 + int(size / 3)))
    for _ in range(n):
        phi = rng.uniform(0, 2 * np.pi)
        bx = cx + rx * math.cos(phi) * rng.uniform(0.7, 1.1)
        by = cy + ry * math.sin(phi) * rng.uniform(0.7, 1.1)
        a = math.radians(ctx.thread_angle + 90.0 * int(rng.integers(2)))
        # point into the hole
        if (cx - bx) * math.cos(a) + (cy - by) * math.sin(a) < 0:
            a += np.pi
        a += rng.uniform(-0.3, 0.3)
        ln = rng.uniform(0.2, 0.7) * min(rx, ry) + 1.5
        mid = np.array([bx + 0.5 * ln * math.cos(a) + rng.uniform(-1, 1), by + 0.5 * ln * math.sin(a)])
        strands.append(np.array([[bx - 1.5 * math.cos(a), by - 1.5 * math.sin(a)], mid,
                                 [bx + ln * math.cos(a), by + ln * math.sin(a)]]))
    sm = _stroke_mask(h, w, strands, 1)
    return _lerp(out, np.broadcast_to(yarn * 1.05, img.shape), 0.85 * sm)


def _d_pleats(img, ctx, rng):
    h, w, kp = ctx.h, ctx.w, ctx.kp
    diag = math.hypot(h, w)
    cx, cy = _rand_center(rng, h, w, 0.1 * ctx.S)
    if rng.random() < 0.5:
        ang = math.radians(90.0 * int(rng.integers(2)) + rng.uniform(-20, 20))
    else:
        ang = rng.uniform(0, np.pi)
    half = _loguniform(rng, 0.06, 0.65) * diag
    t, d = _line_coords(h, w, cx, cy, ang)
    d = d - rng.uniform(-0.6, 0.6) * t * t / max(half, 1.0) * 0.25
    sig = rng.uniform(1.5, 5.0) * kp
    amp = min(0.6, rng.uniform(0.15, 0.32) * ctx.cs)
    z = d / sig
    prof = amp * (z * np.exp(0.5 - 0.5 * z * z)) - 0.5 * amp * np.exp(-0.5 * (d / (2 * sig)) ** 2)
    if rng.random() < 0.35:  # a second parallel fold
        z2 = (d - rng.uniform(3, 6) * sig) / sig
        prof = prof + 0.7 * amp * (z2 * np.exp(0.5 - 0.5 * z2 * z2))
    win = _end_window(t, half, 0.1 * half + 2)
    return np.clip(img * (1 + (prof * win)[..., None]), 0, 1).astype(np.float32)


def _d_flaw(img, ctx, rng):
    h, w, kp = ctx.h, ctx.w, ctx.kp
    ang = math.radians(ctx.thread_angle + 90.0 * int(rng.integers(2)) + rng.uniform(-0.5, 0.5))
    cx, cy = _rand_center(rng, h, w, 1)
    span = abs(w * math.cos(ang)) + abs(h * math.sin(ang))
    half = _loguniform(rng, 0.1, 1.0) * span / 2
    t, d = _line_coords(h, w, cx, cy, ang)
    sig = rng.uniform(0.5, 1.2) * kp
    if rng.random() < 0.3:  # thick place / double pick: a wider band
        sig *= rng.uniform(1.5, 2.5)
    prof = np.exp(-0.5 * (d / sig) ** 2) * _end_window(t, half, 2.0)
    prof *= (1 + 0.25 * _smooth_noise(rng, h, w, 8.0))
    c = min(0.85, rng.uniform(0.3, 0.55) * ctx.cs)
    if rng.random() < 0.6:
        out = img * (1 - c * prof[..., None])
    else:
        out = img + c * prof[..., None] * (1 - img)
    return np.clip(out, 0, 1).astype(np.float32)


def _region_mask(rng, ctx, size_lo, size_hi):
    h, w = ctx.h, ctx.w
    size = rng.uniform(size_lo, size_hi) * ctx.S
    cx, cy = _rand_center(rng, h, w, 0.15 * ctx.S)
    if rng.random() < 0.5:
        x, y = _grid(h, w)
        rw, rh = size / 2, size / 2 * rng.uniform(0.5, 1.5)
        return _aa(np.minimum(rw - np.abs(x - cx), rh - np.abs(y - cy)), 2.0)
    return _blob(h, w, cx, cy, size / 2, size / 2 * rng.uniform(0.5, 1.0), rng.uniform(0, np.pi), rng,
                 0.3, 2.0)


def _d_misprinting(img, ctx, rng):
    L = ctx.layers
    m = _region_mask(rng, ctx, 0.15, 0.55)
    if rng.random() < 0.55:  # print missing
        target = L["ground"]
        f = rng.uniform(0.7, 1.0)
        return _lerp(img, target, f * m)
    # print misregistered (shifted) in the region
    p = ctx.motif_period or 20.0
    r = rng.uniform(0.12, 0.3) * p
    a = rng.uniform(0, 2 * np.pi)
    M = np.float32([[1, 0, r * math.cos(a)], [0, 1, r * math.sin(a)]])
    sh = lambda z: cv2.warpAffine(z, M, (ctx.w, ctx.h), flags=cv2.INTER_LINEAR,  # noqa: E731
                                  borderMode=cv2.BORDER_REFLECT)
    pa = sh(L["print_alpha"])
    target = L["ground"] * (1 - pa[..., None]) + sh(L["print_premul"])
    return _lerp(img, target, m)


def _d_broken_figures(img, ctx, rng):
    L = ctx.layers
    m = _region_mask(rng, ctx, 0.15, 0.5)
    pa = L["print_alpha"]
    prem = L["print_premul"]
    if rng.random() < 0.5:  # wrong colours
        perm = [[1, 2, 0], [2, 0, 1], [2, 1, 0]][int(rng.integers(3))]
        prem2 = prem[..., perm] * rng.uniform(0.6, 1.0)
        target = L["ground"] * (1 - pa[..., None]) + prem2
    else:  # figures out of place (half a motif period)
        p = ctx.motif_period or 20.0
        sx, sy = rng.uniform(0.35, 0.65) * p, rng.uniform(0.35, 0.65) * p
        M = np.float32([[1, 0, sx], [0, 1, sy]])
        pa2 = cv2.warpAffine(pa, M, (ctx.w, ctx.h), borderMode=cv2.BORDER_REFLECT)
        prem2 = cv2.warpAffine(prem, M, (ctx.w, ctx.h), borderMode=cv2.BORDER_REFLECT)
        # recolour a little so that the displaced figures are distinguishable
        target = L["ground"] * (1 - pa2[..., None]) + prem2 * rng.uniform(0.7, 1.0)
    return _lerp(img, target, m)


def _d_wax_spot(img, ctx, rng):
    h, w, S, kp = ctx.h, ctx.w, ctx.S, ctx.kp
    size = _loguniform(rng, 4.0 * kp, 0.35 * S)
    cx, cy = _rand_center(rng, h, w)
    m = _blob(h, w, cx, cy, size / 2, size / 2 * rng.uniform(0.5, 1.0), rng.uniform(0, np.pi), rng,
              rng.uniform(0.1, 0.3), 0.8)
    blur = cv2.GaussianBlur(img, (0, 0), rng.uniform(1.0, 2.0))
    gray = blur.mean(axis=2, keepdims=True)
    c = min(0.6, rng.uniform(0.12, 0.3) * ctx.cs)
    target = (0.6 * blur + 0.4 * gray) * (1 + c if rng.random() < 0.6 else 1 - c)
    return np.clip(_lerp(img, np.clip(target, 0, 1), m), 0, 1).astype(np.float32)


def _d_color_shade(img, ctx, rng):
    h, w, S, kp = ctx.h, ctx.w, ctx.S, ctx.kp
    x, y = _grid(h, w)
    soft = rng.uniform(2.0, 10.0) * kp
    r = rng.random()
    if r < 0.4:   # band across the image
        if rng.random() < 0.5:
            c0, t = rng.uniform(0, h), rng.uniform(0.1, 0.6) * h
            m = _aa(t / 2 - np.abs(y - c0), soft)
        else:
            c0, t = rng.uniform(0, w), rng.uniform(0.1, 0.6) * w
            m = _aa(t / 2 - np.abs(x - c0), soft)
    elif r < 0.75:  # large soft blob
        size = rng.uniform(0.15, 1.0) * S
        cx, cy = _rand_center(rng, h, w)
        m = _blob(h, w, cx, cy, size / 2, size / 2 * rng.uniform(0.5, 1.0), rng.uniform(0, np.pi), rng,
                  0.2, soft)
    else:  # one side of the image (different dye lot)
        ang = rng.uniform(0, 2 * np.pi)
        cx, cy = _rand_center(rng, h, w, 0.2 * S)
        t, d = _line_coords(h, w, cx, cy, ang)
        m = _aa(d, soft)
    g = min(0.45, rng.uniform(0.08, 0.16) * ctx.cs) * (1 if rng.random() < 0.4 else -1)
    tint = g + min(0.2, 0.06 * ctx.cs) * rng.uniform(-1, 1, 3).astype(np.float32)
    return np.clip(img * (1 + m[..., None] * tint), 0, 1).astype(np.float32)


def _d_crease_mark(img, ctx, rng):
    h, w, kp = ctx.h, ctx.w, ctx.kp
    horiz = rng.random() < 0.5
    ang = math.radians((0.0 if horiz else 90.0) + rng.uniform(-10, 10))
    cx, cy = _rand_center(rng, h, w, 0.1 * ctx.S)
    span = w if horiz else h
    half = rng.uniform(0.3, 0.6) * span
    t, d = _line_coords(h, w, cx, cy, ang)
    d = d - rng.uniform(0.5, 3.0) * kp * np.sin(2 * np.pi * t / (rng.uniform(0.5, 2.0) * span))
    bw = rng.uniform(3, 14) * kp
    c = min(0.5, rng.uniform(0.14, 0.25) * ctx.cs)
    band = _aa(bw / 2 - np.abs(d), 1.5)
    lines = np.exp(-0.5 * ((np.abs(d) - bw / 2) / (0.6 * kp)) ** 2)
    sgn = 1 if rng.random() < 0.65 else -1
    f = (sgn * c * band - 1.3 * c * lines) * _end_window(t, half, 0.08 * half + 2)
    return np.clip(img * (1 + f[..., None]), 0, 1).astype(np.float32)


_DEFECT_FNS = {
    "stained": _d_stained,
    "broken_figures": _d_broken_figures,
    "water_mark": _d_water_mark,
    "knots": _d_knots,
    "seam_allowance": _d_seam_allowance,
    "joining_stencil_mark": _d_joining_stencil_mark,
    "insect": _d_insect,
    "broken_hole": _d_broken_hole,
    "pleats": _d_pleats,
    "flaw": _d_flaw,
    "misprinting": _d_misprinting,
    "wax_spot": _d_wax_spot,
    "color_shade": _d_color_shade,
    "crease_mark": _d_crease_mark,
}
assert set(_DEFECT_FNS) == set(DEFECT_TYPES)


def _diff_region(before, after, rel=0.25, abs_min=0.02):
    """
    The pixels visibly changed between two HxWx3 float32 images: those whose max-channel absolute
    change is ``>= max(abs_min, rel * peak)`` (``peak`` = 99th percentile of the changes above
    ``abs_min``).

    Returns:
        (box, mask): ``box`` = tight box ``[x0, y0, x1, y1]`` of those pixels (ints, x1/y1
        exclusive), ``mask`` = HxW bool array of exactly those pixels (so ``box`` is the tight box
        of ``mask``); ``(None, None)`` if the change is too small to see.
    """
    d = np.abs(after - before).max(axis=2)
    changed = d[d > abs_min]
    if changed.size < 2:
        return None, None
    peak = float(np.percentile(changed, 99))
    if peak < 1.5 * abs_min:
        return None, None
    mask = d >= max(abs_min, rel * peak)
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None, None
    box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
    return box, mask


def _encode_mask(mask):
    """COCO compressed RLE ``{"size": [h, w], "counts": str}`` of an HxW bool mask (pycocotools)."""
    from pycocotools import mask as mask_util

    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return OrderedDict([("size", [int(v) for v in rle["size"]]), ("counts", rle["counts"].decode("ascii"))])


def _iou(a, b):
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


# ----------------------------------------------------------------------------------------------
# geometry + photometry of one capture
# ----------------------------------------------------------------------------------------------
def _capture(canvas, pad, w, h, dx, dy, rot_deg):
    """
    Crop an image from a texture canvas. The result (HxW[x3] float32) is the template (centre crop)
    rotated by ``rot_deg`` (cv2.getRotationMatrix2D convention, about the image centre) and then
    translated by ``(dx, dy)`` px, i.e. for rot 0: ``out(x, y) = template(x - dx, y - dy)``.
    """
    if rot_deg == 0 and float(dx).is_integer() and float(dy).is_integer():
        x0, y0 = pad - int(dx), pad - int(dy)
        return canvas[y0:y0 + h, x0:x0 + w].copy()
    inv = _inverse_map(w, h, dx, dy, rot_deg)
    inv[0, 2] += pad
    inv[1, 2] += pad
    return cv2.warpAffine(canvas, inv, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REFLECT)


def _inverse_map(w, h, dx, dy, rot_deg):
    """2x3 float64 map from defect-image pixel to template pixel (for ``cv2.WARP_INVERSE_MAP``)."""
    fwd = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), float(rot_deg), 1.0)
    fwd[0, 2] += dx
    fwd[1, 2] += dy
    return cv2.invertAffineTransform(fwd)


def align_template(template, shift_dx, shift_dy, rotation=0.0):
    """
    Warp a template (HxW[x3] uint8 or float32) onto its defect image using the misalignment recorded
    in ``meta.json`` (``shift_dx``, ``shift_dy``, ``rotation``); borders are reflected.
    """
    h, w = template.shape[:2]
    return cv2.warpAffine(template, _inverse_map(w, h, shift_dx, shift_dy, rotation), (w, h),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT)


def _photometric(img, rng, cfg):
    """Illumination change + sensor noise; float32 HxWx3 in [0, 1] -> uint8 HxWx3 BGR."""
    h, w = img.shape[:2]
    g = 1.0 + rng.uniform(-1, 1) * cfg.illumination_gain
    o = rng.uniform(-1, 1) * cfg.illumination_offset
    phi = rng.uniform(0, 2 * np.pi)
    amp = rng.uniform(-1, 1) * cfg.illumination_gradient
    noise = rng.standard_normal(img.shape).astype(np.float32)
    out = img * g + o
    if amp != 0:
        x, y = _grid(h, w)
        ramp = ((x - w / 2) * math.cos(phi) + (y - h / 2) * math.sin(phi)) / (0.5 * math.hypot(w, h))
        out = out * (1.0 + amp * ramp)[..., None]
    out = out * 255.0 + noise * cfg.noise_sigma
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# planning + generation
# ----------------------------------------------------------------------------------------------
_REL_ID = {"seen": 0, "unseen_texture": 1}
_KIND_ID = {"defect": 0, "normal": 1}


def _piece_prefix(seed, release, kind, index):
    key = f"synthetic-fabric/{seed}/{release}/{kind}/{index}".encode()
    return hashlib.sha1(key).hexdigest()[:16]


def _plan_release(cfg, release, families, n_pieces, n_normal):
    """Per-piece plan (family, number of images, primary defect type per image), balanced by cycling."""
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, _REL_ID[release], 1000]))
    lo, hi = cfg.images_per_piece

    def fam_cycle(n, fams):
        out = []
        while len(out) < n:
            out += [fams[i] for i in rng.permutation(len(fams))]
        return out[:n]

    plans = {"defect": [], "normal": []}
    # only families with an applicable defect type can carry defects
    dfams = [f for f in families if _applicable_types(f, cfg.defect_types)]
    counts = {t: 0 for t in cfg.defect_types}
    for fam in fam_cycle(n_pieces, dfams):
        n_img = int(rng.integers(lo, hi + 1))
        primaries = []
        for _ in range(n_img):
            app = _applicable_types(fam, cfg.defect_types)
            least = min(counts[t] for t in app)
            cands = [t for t in app if counts[t] == least]
            t = cands[int(rng.integers(len(cands)))]
            counts[t] += 1
            primaries.append(t)
        plans["defect"].append({"family": fam, "n_images": n_img, "primaries": primaries})
    for fam in fam_cycle(n_normal, list(families)):
        plans["normal"].append({"family": fam, "n_images": int(rng.integers(lo, hi + 1)), "primaries": None})
    return plans


def _make_piece(cfg, release, kind, index, plan):
    """
    Render one piece: template + its images.

    Returns:
        (prefix, template uint8 HxWx3, list of (stem, image uint8 HxWx3, record dict, masks)),
        ``masks`` = one HxW bool array per entry of ``record["boxes"]`` (see :func:`_paint_defects`).
    """
    W, H = cfg.width, cfg.height
    S = min(W, H)
    ks = S / 256.0
    base = [cfg.seed, _REL_ID[release], _KIND_ID[kind], index]
    rng = np.random.default_rng(np.random.SeedSequence(base + [0]))
    rot_margin = 0.5 * math.hypot(W, H) * math.sin(math.radians(cfg.max_rotation)) if cfg.max_rotation else 0
    pad = int(math.ceil(cfg.max_shift + rot_margin)) + 4
    family = plan["family"]
    tex = _render_texture(family, H + 2 * pad, W + 2 * pad, rng, ks)
    prefix = _piece_prefix(cfg.seed, release, kind, index)
    t_rng = np.random.default_rng(np.random.SeedSequence(base + [1]))
    template = _photometric(_capture(tex.image, pad, W, H, 0, 0, 0.0), t_rng, cfg)
    out = []
    for k in range(plan["n_images"]):
        r = np.random.default_rng(np.random.SeedSequence(base + [2 + k]))
        dx, dy = (float(v) for v in r.uniform(-cfg.max_shift, cfg.max_shift, 2))
        rot = float(r.uniform(-cfg.max_rotation, cfg.max_rotation))
        if cfg.subpixel_shift:
            dx, dy = round(dx, 2), round(dy, 2)
        else:
            dx, dy = float(round(dx)), float(round(dy))
        rot = round(rot, 3)
        dx, dy = dx + 0.0, dy + 0.0  # no negative zero in JSON
        img = _capture(tex.image, pad, W, H, dx, dy, rot)
        stem = f"{prefix}_{k}"
        boxes, masks = [], []
        if kind == "defect":
            layers = None
            if tex.ground is not None:
                layers = {name: _capture(getattr(tex, name), pad, W, H, dx, dy, rot)
                          for name in ("ground", "print_premul", "print_alpha")}
            ctx = _Ctx(H, W, tex.thread_angle, layers, tex.motif_period, cfg.contrast_scale)
            img, boxes, masks = _paint_defects(img, ctx, r, cfg, family, plan["primaries"][k])
        arr = _photometric(img, r, cfg)
        rec = OrderedDict([
            ("stem", stem), ("release", release), ("kind", kind), ("prefix", prefix), ("family", family),
            ("defect_types", [b["type"] for b in boxes]), ("shift_dx", dx), ("shift_dy", dy),
            ("rotation", rot), ("boxes", boxes), ("texture", tex.params),
        ])
        out.append((stem, arr, rec, masks))
    return prefix, template, out


def _paint_defects(img, ctx, rng, cfg, family, primary):
    """
    Paint the primary defect + 0..2 random extra ones.

    Returns:
        (image, boxes, masks): ``boxes`` a list of ``{"type", "defect_name", "bbox"}`` dicts,
        ``masks`` the parallel list of HxW bool masks: the pixels that defect changed *when it was
        painted* (:func:`_diff_region`; its box is the tight box of its mask). A later defect may
        paint over part of an earlier one; the earlier mask is not updated (boxes overlap by at most
        IoU 0.3), so masks of one image can overlap.
    """
    app = _applicable_types(family, cfg.defect_types)
    n_extra = int(rng.choice([0, 1, 2], p=[0.6, 0.28, 0.12]))
    n_extra = min(n_extra, cfg.max_defects_per_image - 1)
    types = [primary] + [app[int(rng.integers(len(app)))] for _ in range(n_extra)]
    types.sort(key=lambda t: 0 if t in _REGION_DEFECTS else 1)  # stable: region-replacing ones first
    boxes, masks = [], []
    for t in types:
        for attempt in range(8):
            cand = _DEFECT_FNS[t](img, ctx, rng)
            box, mask = _diff_region(img, cand)
            if box is None or any(_iou(box, b["bbox"]) > 0.3 for b in boxes):
                continue
            img = cand
            boxes.append({"type": t, "defect_name": DEFECT_TYPES[t], "bbox": box})
            masks.append(mask)
            break
    if not boxes:  # the primary never became visible (e.g. misprint over an empty area): fall back
        fallback = "stained" if "stained" in app else app[0]
        for attempt in range(20):
            cand = _DEFECT_FNS[fallback](img, ctx, rng)
            box, mask = _diff_region(img, cand)
            if box is not None:
                img = cand
                boxes.append({"type": fallback, "defect_name": DEFECT_TYPES[fallback], "bbox": box})
                masks.append(mask)
                break
    if not boxes:
        raise RuntimeError("synthetic fabric: could not paint a visible defect")  # pragma: no cover
    return img, boxes, masks


def _imwrite(path, img, quality):
    ok = cv2.imwrite(path, img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise OSError(f"cv2.imwrite failed: {path}")


def _prepare_out(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    meta_path = os.path.join(out_dir, "meta.json")
    existing = [r for r in RELEASES if os.path.exists(os.path.join(out_dir, r))]
    if not existing:
        return
    ours = False
    if os.path.isfile(meta_path):
        try:
            with open(meta_path, encoding="utf-8") as f:
                ours = json.load(f).get("generator") == GENERATOR_NAME
        except (OSError, ValueError):
            ours = False
    if not ours:
        raise FileExistsError(f"{out_dir} already has {existing} not written by this generator "
                              f"(no matching meta.json); remove them or choose another --out")
    for r in existing:
        shutil.rmtree(os.path.join(out_dir, r))


def generate_fabric_dataset(out_dir, cfg: Optional[SyntheticFabricConfig] = None, verbose=False):
    """
    Generate the synthetic fabric dataset under ``out_dir`` (layout in the module docstring).

    An earlier output of this generator in ``out_dir`` (``seen/``, ``unseen_texture/``) is replaced;
    foreign folders of those names raise ``FileExistsError``. Other files in ``out_dir`` are kept.

    Args:
        out_dir (str): dataset root.
        cfg (SyntheticFabricConfig or None): parameters (default config if None); validated first
            (``ValueError`` naming the field).
        verbose (bool): print one progress line per release.

    Returns:
        dict: summary ``{"out_dir", "seconds", "releases": {release: {"pieces", "normal_pieces",
        "defect_images", "normal_images", "boxes", "boxes_per_class" (Chinese -> n),
        "boxes_per_type" (type -> n), "families" (list)}}, "boxes_per_class", "families"
        (release -> list), "box_areas" (type -> [min, median, max] px²)}``.
    """
    cfg = SyntheticFabricConfig() if cfg is None else cfg
    cfg.validate()
    t0 = time.perf_counter()
    _prepare_out(out_dir)
    releases = OrderedDict([
        ("seen", (cfg.seen_families(), cfg.seen_pieces, cfg.seen_normal_pieces)),
        ("unseen_texture", (tuple(cfg.unseen_families), cfg.unseen_pieces, cfg.unseen_normal_pieces)),
    ])
    records = []
    summary = {"out_dir": os.path.abspath(out_dir), "releases": OrderedDict(), "families": OrderedDict()}
    areas = {t: [] for t in DEFECT_TYPES}
    for release, (fams, n_def, n_norm) in releases.items():
        root = os.path.join(out_dir, release)
        os.makedirs(os.path.join(root, "Annotations"), exist_ok=True)
        os.makedirs(os.path.join(root, "defect"), exist_ok=True)
        os.makedirs(os.path.join(root, "normal"), exist_ok=True)
        plans = _plan_release(cfg, release, list(fams), n_def, n_norm) if fams else {"defect": [], "normal": []}
        annos = []
        rs = OrderedDict([("pieces", n_def), ("normal_pieces", n_norm), ("defect_images", 0),
                          ("normal_images", 0), ("boxes", 0), ("boxes_per_class", OrderedDict()),
                          ("boxes_per_type", OrderedDict()), ("families", sorted(fams))])
        for kind in ("defect", "normal"):
            for index, plan in enumerate(plans[kind]):
                prefix, template, items = _make_piece(cfg, release, kind, index, plan)
                for stem, arr, rec, masks in items:
                    d = os.path.join(root, kind, stem)
                    os.makedirs(d, exist_ok=True)
                    _imwrite(os.path.join(d, f"{stem}.jpg"), arr, cfg.jpeg_quality)
                    _imwrite(os.path.join(d, f"template_{prefix}.jpg"), template, cfg.jpeg_quality)
                    rs[f"{kind}_images"] += 1
                    for b, m in zip(rec["boxes"], masks):
                        annos.append(OrderedDict([("name", f"{stem}.jpg"), ("defect_name", b["defect_name"]),
                                                  ("bbox", [float(v) for v in b["bbox"]]),
                                                  ("segmentation", _encode_mask(m))]))
                        rs["boxes_per_class"][b["defect_name"]] = rs["boxes_per_class"].get(b["defect_name"], 0) + 1
                        rs["boxes_per_type"][b["type"]] = rs["boxes_per_type"].get(b["type"], 0) + 1
                        x0, y0, x1, y1 = b["bbox"]
                        areas[b["type"]].append((x1 - x0) * (y1 - y0))
                    records.append(rec)
        rs["boxes"] = len(annos)
        with open(os.path.join(root, "Annotations", "anno_train.json"), "w", encoding="utf-8") as f:
            json.dump(annos, f, ensure_ascii=False)
        summary["releases"][release] = rs
        summary["families"][release] = sorted(fams)
        if verbose:
            print(f"[synthetic fabric] {release}: {rs['defect_images']} defect + {rs['normal_images']} normal "
                  f"images, {rs['boxes']} boxes ({time.perf_counter() - t0:.1f}s)", flush=True)
    total = OrderedDict()
    for zh in DEFECT_TYPES.values():
        n = sum(r["boxes_per_class"].get(zh, 0) for r in summary["releases"].values())
        if n:
            total[zh] = n
    summary["boxes_per_class"] = total
    summary["box_areas"] = OrderedDict(
        (t, [int(min(a)), float(np.median(a)), int(max(a))]) for t, a in areas.items() if a)
    meta = OrderedDict([
        ("generator", GENERATOR_NAME), ("version", GENERATOR_VERSION), ("seed", cfg.seed),
        ("config", cfg.to_dict()), ("families", summary["families"]),
        ("defect_types", OrderedDict(DEFECT_TYPES)),
        ("shift_convention", "defect(x, y) = template rotated by `rotation` degrees about the image centre "
                             "(cv2.getRotationMatrix2D convention), then translated by (shift_dx, shift_dy) px"),
        ("images", records),
    ])
    with open(os.path.join(out_dir, "meta.json"), "w", encoding="utf-8") as f:
        json.dump(meta, f, ensure_ascii=False, indent=1)
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    return summary


def format_summary(summary):
    """Human-readable multi-line text of a :func:`generate_fabric_dataset` summary."""
    lines = [f"synthetic fabric dataset in {summary['out_dir']} ({summary.get('seconds', 0):.1f}s)"]
    for rel, r in summary["releases"].items():
        lines.append(f"  {rel}: {r['defect_images']} defect images ({r['pieces']} pieces), "
                     f"{r['normal_images']} normal images ({r['normal_pieces']} pieces), {r['boxes']} boxes")
        lines.append(f"    families: {', '.join(r['families'])}")
    lines.append("  boxes per class (all releases): type / class: n  [min / median / max area px²]")
    inv = {zh: t for t, zh in DEFECT_TYPES.items()}
    for zh, n in summary["boxes_per_class"].items():
        t = inv[zh]
        a = summary["box_areas"].get(t)
        lines.append(f"    {t:22s} {zh}: {n:4d}  [{a[0]} / {a[1]:.0f} / {a[2]}]")
    return "\n".join(lines)


_PREVIEW_COLORS = [(0, 0, 255), (0, 200, 0), (255, 0, 0), (0, 200, 255), (255, 0, 255), (255, 255, 0),
                   (0, 128, 255), (128, 0, 255), (255, 128, 0), (0, 255, 128), (128, 255, 0),
                   (255, 0, 128), (60, 60, 200), (200, 60, 60)]


def make_preview(out_dir, path, n=8):
    """
    Write a contact sheet PNG: ``n`` defect images (chosen to cover many defect types, both releases)
    with their boxes and type names | their templates | ``3 * |defect - aligned template|`` (the
    template warped by the recorded shift / rotation, see :func:`align_template`).

    Returns:
        HxWx3 uint8 BGR array of the sheet (also written to ``path``).
    """
    with open(os.path.join(out_dir, "meta.json"), encoding="utf-8") as f:
        meta = json.load(f)
    defects = [r for r in meta["images"] if r["kind"] == "defect"]
    chosen, seen_types = [], set()
    for want_unseen in (False, True):
        pool = [r for r in defects if (r["release"] == "unseen_texture") == want_unseen]
        quota = n - n // 3 if not want_unseen else n
        for r in pool:
            if len(chosen) >= quota:
                break
            new = set(r["defect_types"]) - seen_types
            if new:
                chosen.append(r)
                seen_types |= new
        for r in pool:  # fill up
            if len(chosen) >= quota:
                break
            if r not in chosen:
                chosen.append(r)
    type_ids = {t: i for i, t in enumerate(DEFECT_TYPES)}
    rows = []
    for r in chosen[:n]:
        d = os.path.join(out_dir, r["release"], "defect", r["stem"])
        img = cv2.imread(os.path.join(d, r["stem"] + ".jpg"))
        tpl = cv2.imread(os.path.join(d, f"template_{r['prefix']}.jpg"))
        aligned = align_template(tpl, r["shift_dx"], r["shift_dy"], r["rotation"])
        diff = np.clip(3.0 * np.abs(img.astype(np.float32) - aligned.astype(np.float32)), 0, 255).astype(np.uint8)
        vis = img.copy()
        for b in r["boxes"]:
            x0, y0, x1, y1 = b["bbox"]
            col = _PREVIEW_COLORS[type_ids[b["type"]] % len(_PREVIEW_COLORS)]
            cv2.rectangle(vis, (x0, y0), (x1 - 1, y1 - 1), col, 1)
            cv2.putText(vis, b["type"], (x0 + 1, max(9, y0 - 2)), cv2.FONT_HERSHEY_SIMPLEX, 0.33, (0, 0, 0), 2,
                        cv2.LINE_AA)
            cv2.putText(vis, b["type"], (x0 + 1, max(9, y0 - 2)), cv2.FONT_HERSHEY_SIMPLEX, 0.33, col, 1,
                        cv2.LINE_AA)
        head = np.full((14, img.shape[1] * 3 + 8, 3), 255, np.uint8)
        cv2.putText(head, f"{r['release']} / {r['family']} / {r['stem']}  shift=({r['shift_dx']}, {r['shift_dy']})"
                    f" rot={r['rotation']}", (2, 10), cv2.FONT_HERSHEY_SIMPLEX, 0.33, (0, 0, 0), 1, cv2.LINE_AA)
        sep = np.full((img.shape[0], 4, 3), 255, np.uint8)
        rows.append(np.vstack([head, np.hstack([vis, sep, tpl, sep, diff])]))
    if not rows:
        raise ValueError(f"{out_dir}: no defect images to preview")
    sheet = np.vstack(rows)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    cv2.imwrite(path, sheet)
    return sheet
