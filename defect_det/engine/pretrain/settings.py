"""Settings of backbone pre-training: :class:`PretrainSettings` (everything that determines a result), the
input modes, the held-out texture families, the keys of a ``meta.json`` record pre-training may read
(:data:`IMAGE_LEVEL_KEYS`) and those it must never see (:data:`FORBIDDEN_KEYS`), and output file names."""
import dataclasses
import math
from dataclasses import dataclass
from typing import Optional, Tuple

from ...data.synthetic.fabric import SyntheticFabricConfig

__all__ = ["FORBIDDEN_KEYS", "HELD_OUT_FAMILIES", "IMAGE_LEVEL_KEYS", "INPUT_MODES", "OBJECTIVE_NAMES", "PretrainSettings"]

INPUT_MODES = ("image", "difference")
OBJECTIVE_NAMES = ("labels", "anomaly")
"""``labels``: texture family + defect presence (image-level labels); ``anomaly``: self-supervised segmentation
of pasted irregularities on defect-free images (:mod:`.objectives`)."""

HELD_OUT_FAMILIES = tuple(SyntheticFabricConfig().unseen_families)
"""The benchmark's held-out texture families (``SyntheticFabricConfig.unseen_families`` default:
herringbone, plaid). Never used in pre-training; see :func:`check_families`."""

IMAGE_LEVEL_KEYS = ("stem", "release", "kind", "prefix", "family", "defect_types")
"""The only keys of a ``meta.json`` image record that pre-training reads. ``defect_types`` is the list
of defect types painted on the image (an image-level fact; duplicates collapse to a set)."""

FORBIDDEN_KEYS = ("boxes", "bbox", "segmentation", "annotations", "masks", "gt_boxes", "gt_masks")
"""Pixel / box supervision that must never reach pre-training: neither a key of :data:`IMAGE_LEVEL_KEYS`
nor a field of :class:`ImageLevelRecord` (asserted at import)."""

assert not set(IMAGE_LEVEL_KEYS) & set(FORBIDDEN_KEYS)

CHECKPOINT_NAME = "checkpoint.pth"
WEIGHTS_NAME = "backbone.pth"
SIDECAR_NAME = "backbone.json"
METRICS_NAME = "metrics.jsonl"
AUTHOR = "defect_det tools/pretrain_backbone.py"


# ----------------------------------------------------------------------------------------------
# settings
# ----------------------------------------------------------------------------------------------
@dataclass
class PretrainSettings:
    """Everything that determines a pre-training result (the CLI flags of tools/pretrain_backbone.py).

    Bookkeeping that does not change the result (output folder, threads, logging and checkpoint
    periods, ``stop_at``) is passed to :func:`run_pretraining` separately.
    """

    input_mode: str = "image"
    """``"image"`` (baseline) or ``"difference"`` (TR-Pre); see the module docstring."""
    objective: str = "labels"
    """What is learnt: ``"labels"`` or ``"anomaly"`` (:data:`OBJECTIVE_NAMES`, :mod:`.objectives`)."""
    align: bool = True
    """difference mode: register the template onto the image by phase correlation first."""
    iters: int = 5000
    batch_size: int = 8
    lr: float = 1e-3
    """AdamW peak learning rate."""
    weight_decay: float = 0.05
    """AdamW weight decay on conv / linear weights (not on norm parameters or biases)."""
    schedule: str = "cosine"
    """``"cosine"`` (to 0 at ``iters``) or ``"step"`` (x0.1 at each fraction of ``steps``)."""
    steps: Tuple[float, ...] = (0.8, 0.93)
    warmup_iters: int = 200
    clip_grad: float = 5.0
    """Gradient L2-norm clipping (<= 0: off)."""
    defect_weight: float = 10.0
    """Weight of the defect-presence BCE (mean over images and types) against the family CE. With 1,
    the family CE dominated and the 14 sparse defect terms stayed at the prior (measured on the
    difference input, projects/Benchmark/README.md); 10 learns them."""
    pool: str = "avgmax"
    """Global pooling of the last stage: ``"avg"``, ``"max"`` or ``"avgmax"`` (both, concatenated).
    ``avgmax``: an average alone dilutes a defect of a few pixels over the whole res5 map."""
    crop: Optional[Tuple[int, int]] = (224, 272)
    """(H, W) random crop after scaling (reflect-padded if the scaled image is smaller); None: none."""
    scale: Tuple[float, float] = (0.875, 1.125)
    """Random rescale factor range (the detector trains at 224..288 px on 256 px images)."""
    hflip: bool = True
    vflip: bool = True
    photometric: float = 0.1
    """Brightness / contrast jitter strength (factors uniform in 1 +- this); difference mode: one draw
    shared by image and template (independent draws would add a global offset to the difference)."""
    val_fraction: float = 0.1
    """Fraction of the pieces (texture instances) held out for validation (split by piece)."""
    seed: int = 0

    def validate(self):
        """Raise ``ValueError`` naming the field if a setting is invalid."""
        def bad(name, msg):
            raise ValueError(f"pretrain setting {name}: {msg}")

        if self.input_mode not in INPUT_MODES:
            bad("input_mode", f"must be one of {INPUT_MODES}, got {self.input_mode!r}")
        if self.objective not in OBJECTIVE_NAMES:
            bad("objective", f"must be one of {OBJECTIVE_NAMES}, got {self.objective!r}")
        if self.objective == "anomaly" and self.input_mode != "image":
            bad("objective", "'anomaly' needs input_mode 'image' (the template difference already shows the defect)")
        if self.schedule not in ("cosine", "step"):
            bad("schedule", f"must be 'cosine' or 'step', got {self.schedule!r}")
        if self.pool not in ("avg", "max", "avgmax"):
            bad("pool", f"must be avg|max|avgmax, got {self.pool!r}")
        for name in ("iters", "batch_size"):
            if int(getattr(self, name)) < 1:
                bad(name, f"must be >= 1, got {getattr(self, name)}")
        if self.warmup_iters < 0:
            bad("warmup_iters", f"must be >= 0, got {self.warmup_iters}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            bad("lr", f"must be a positive number, got {self.lr}")
        if self.weight_decay < 0 or self.defect_weight < 0:
            bad("weight_decay / defect_weight", "must be >= 0")
        if any(not 0 < s < 1 for s in self.steps) or list(self.steps) != sorted(self.steps):
            bad("steps", f"must be increasing fractions of iters in (0, 1), got {self.steps}")
        lo, hi = self.scale
        if not 0 < lo <= hi:
            bad("scale", f"must be (min, max) with 0 < min <= max, got {self.scale}")
        if self.crop is not None and (len(self.crop) != 2 or min(self.crop) < 32):
            bad("crop", f"must be (H, W) with both >= 32 (or None), got {self.crop}")
        if not 0 <= self.photometric < 1:
            bad("photometric", f"must be in [0, 1), got {self.photometric}")
        if not 0 <= self.val_fraction < 1:
            bad("val_fraction", f"must be in [0, 1), got {self.val_fraction}")
        return self

    def to_dict(self):
        d = dataclasses.asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}
