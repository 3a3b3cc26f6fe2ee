"""Names and parameters of the synthetic fabric generator: texture families, defect types (with their
Chinese classes), releases, and :class:`SyntheticFabricConfig` (every knob, with its validation)."""
import dataclasses
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Tuple

import numpy as np

from ...datasets.tianchi_categories import FABRIC_CATEGORIES

__all__ = [
    "DEFECT_TYPES",
    "GENERATOR_NAME",
    "GENERATOR_VERSION",
    "PRINTED_FAMILIES",
    "PRINT_ONLY_DEFECTS",
    "RELEASES",
    "TEXTURE_FAMILIES",
    "SyntheticFabricConfig",
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
