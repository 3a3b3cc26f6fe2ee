"""Backbone pre-training on generated fabric with image-level labels only (``tools/pretrain_backbone.py``).

No weights can be downloaded, so the small CPU detector starts from scratch. This module pre-trains
its bottom-up network (e.g. the half-width ResNet-18 of ``configs/synthetic/faster_rcnn_R18_FPN_cpu.yaml``)
on a separately generated synthetic fabric set, with two image-level tasks:

(a) texture family: softmax cross-entropy over the seen families of the set;
(b) defect presence: one binary cross-entropy per defect type of
    :data:`~defect_det.data.synthetic.fabric.DEFECT_TYPES` (14), multi-label; a normal image has none.

**Masks and boxes are never used.** Labels come from the generator's ``meta.json`` through
:func:`image_level_record`, which reads only the keys in :data:`IMAGE_LEVEL_KEYS` (never ``boxes``,
``bbox``, ``segmentation``; ``Annotations/anno_train.json`` is never opened). The weak-mask comparison
(projects/WeakMask) depends on no pixel label ever reaching the detector, pre-training included.

**Held-out textures are never used.** The benchmark's unseen families (default herringbone and plaid)
measure generalisation to new textures; :func:`check_families` and :func:`load_pretrain_records`
refuse them, and :func:`prepare_pretrain_data` refuses the benchmark's generator seed (same seed =
overlapping images, including the benchmark's test split).

Inputs (``input_mode``) match what the detector's backbone sees:

- ``"image"``: ``(I - PIXEL_MEAN) / PIXEL_STD`` (``GeneralizedRCNN``, the baseline);
- ``"difference"``: ``(I - T) / (2 * PIXEL_STD)`` with T the template registered onto I by phase
  correlation (:func:`defect_det.data.template_ops.align_template`, as ``INPUT.TEMPLATE.ALIGN``),
  as ``TemplateRCNN`` TR-Pre sees it (``MODEL.TEMPLATE.MODE "pre"``).

Determinism: the batch of iteration ``i`` (images, augmentation draws) is a pure function of
``(seed, i)`` (:class:`IterationBatches`), so a resumed run continues at exactly the same data
position; model, optimizer and schedule state come from the checkpoint. With the same number of
threads a resumed run reproduces the uninterrupted one bit for bit.

Output (:func:`export_backbone`): a Detectron2 checkpoint ``{"model": {"backbone.bottom_up.<name>":
tensor}, "__author__": ..., "matching_heuristics": False}`` that ``DetectionCheckpointer(model).load``
loads into ``GeneralizedRCNN`` and ``TemplateRCNN`` (configs: ``MODEL.WEIGHTS <file>``).
"""
import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from detectron2.data import detection_utils as utils
from detectron2.modeling import build_backbone

from ..data.synthetic.fabric import (
    DEFECT_TYPES,
    GENERATOR_NAME,
    TEXTURE_FAMILIES,
    SyntheticFabricConfig,
    generate_fabric_dataset,
)
from ..data.template_ops import estimate_translation, warp_template

__all__ = [
    "FORBIDDEN_KEYS",
    "HELD_OUT_FAMILIES",
    "IMAGE_LEVEL_KEYS",
    "INPUT_MODES",
    "BackbonePretrainNet",
    "ImageLevelRecord",
    "IterationBatches",
    "PretrainSettings",
    "PretrainSample",
    "average_precision",
    "benchmark_dataset_info",
    "bottom_up_state_dict",
    "build_labels",
    "check_families",
    "evaluate",
    "export_backbone",
    "image_level_record",
    "load_pretrain_records",
    "lr_factor",
    "normalize_input",
    "prepare_pretrain_cfg",
    "prepare_pretrain_data",
    "pretrain_losses",
    "run_pretraining",
    "sha256_file",
    "split_by_piece",
]

logger = logging.getLogger(__name__)

INPUT_MODES = ("image", "difference")

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


# ----------------------------------------------------------------------------------------------
# data: generation, image-level records, labels, split
# ----------------------------------------------------------------------------------------------
def benchmark_dataset_info(datasets_root):
    """
    Seed and held-out families of the benchmark set ``<datasets_root>/synthetic_fabric`` (written by
    ``make data``), read from its ``meta.json``; the ``make data`` defaults (seed 0,
    :data:`HELD_OUT_FAMILIES`) when it is not there.

    Returns:
        dict: ``{"root", "seed", "unseen_families", "found"}``.
    """
    root = os.path.join(datasets_root, "synthetic_fabric")
    info = {"root": root, "seed": 0, "unseen_families": list(HELD_OUT_FAMILIES), "found": False}
    meta_path = os.path.join(root, "meta.json")
    if os.path.isfile(meta_path):
        try:
            with open(meta_path, encoding="utf-8") as f:
                meta = json.load(f)
            info.update(seed=int(meta["seed"]), unseen_families=list(meta["config"]["unseen_families"]),
                        found=True)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{meta_path}: cannot read the benchmark's seed / unseen_families ({e})")
    return info


def check_families(families, held_out=HELD_OUT_FAMILIES):
    """
    Raise ``ValueError`` if ``families`` is empty, names an unknown family, or includes a held-out
    (unseen-texture evaluation) family.

    Returns:
        tuple(str): ``families`` in :data:`TEXTURE_FAMILIES` order.
    """
    families = tuple(families)
    unknown = [f for f in families if f not in TEXTURE_FAMILIES]
    if unknown:
        raise ValueError(f"unknown texture families {unknown} (known: {list(TEXTURE_FAMILIES)})")
    leaked = [f for f in families if f in held_out]
    if leaked:
        raise ValueError(
            f"texture families {leaked} are held out for the unseen-texture evaluation "
            f"(held out: {sorted(held_out)}); pre-training on them would leak the test textures"
        )
    if not families:
        raise ValueError("no texture family left for pre-training")
    return tuple(f for f in TEXTURE_FAMILIES if f in families)


def prepare_pretrain_data(root, seed, pieces, normal_pieces, width=320, height=256, families=None,
                          held_out=HELD_OUT_FAMILIES, benchmark_seed=0):
    """
    Generate (or reuse) a pre-training set with :func:`generate_fabric_dataset`: only the ``seen/``
    release, with only non-held-out families, and a seed other than the benchmark's.

    Args:
        root (str): dataset folder; an earlier output of the same config there is reused.
        seed (int): generator seed; must differ from ``benchmark_seed``.
        pieces, normal_pieces (int): defect / defect-free pieces (each gives 1-3 images).
        families (sequence or None): texture families (default: all but ``held_out``).
    Returns:
        tuple(str, bool): ``root`` and whether it was generated now (False: reused).
    """
    if int(seed) == int(benchmark_seed):
        raise ValueError(
            f"pre-training data seed {seed} equals the benchmark's generator seed: the same seed "
            "generates the same pieces, so pre-training would see the benchmark's (test) images; "
            "choose another --data-seed"
        )
    families = check_families([f for f in TEXTURE_FAMILIES if f not in held_out]
                              if families is None else families, held_out)
    cfg = SyntheticFabricConfig(seed=int(seed), width=int(width), height=int(height),
                                seen_pieces=int(pieces), seen_normal_pieces=int(normal_pieces),
                                unseen_pieces=0, unseen_normal_pieces=0, families=families,
                                unseen_families=())
    cfg.validate()
    meta_path = os.path.join(root, "meta.json")
    if os.path.isfile(meta_path):
        try:
            with open(meta_path, encoding="utf-8") as f:
                meta = json.load(f)
            if meta.get("generator") == GENERATOR_NAME and meta.get("config") == cfg.to_dict():
                return root, False
        except (OSError, ValueError):
            pass
    logger.info(f"generating the pre-training set in {root}: seed {seed}, {pieces} defect + "
                f"{normal_pieces} normal pieces, {width}x{height}, families {list(families)}")
    generate_fabric_dataset(root, cfg)
    return root, True


@dataclass(frozen=True)
class ImageLevelRecord:
    """One pre-training image with its image-level labels (no geometry of any defect)."""

    file_name: str
    template_file_name: str
    piece: str
    """The 16-hex-digit piece prefix (images of one piece share a texture instance and template)."""
    family: str
    defect_types: Tuple[str, ...]
    """Sorted, unique defect types present; empty for a normal image."""

    @property
    def is_normal(self) -> bool:
        return not self.defect_types


assert not {f.name for f in dataclasses.fields(ImageLevelRecord)} & set(FORBIDDEN_KEYS)


def image_level_record(meta_record, root) -> ImageLevelRecord:
    """
    The image-level view of one ``meta.json`` image record. Reads ONLY the keys of
    :data:`IMAGE_LEVEL_KEYS` (``record[key]``, nothing else: boxes and masks are never touched).

    Args:
        meta_record (Mapping): an entry of ``meta.json``'s ``images``.
        root (str): the dataset folder holding ``meta.json``.
    """
    r = {k: meta_record[k] for k in IMAGE_LEVEL_KEYS}
    if r["kind"] not in ("defect", "normal"):
        raise ValueError(f"{root}/meta.json: image {r['stem']}: kind must be defect|normal, got {r['kind']!r}")
    types = tuple(sorted(set(r["defect_types"])))
    unknown = [t for t in types if t not in DEFECT_TYPES]
    if unknown:
        raise ValueError(f"{root}/meta.json: image {r['stem']}: unknown defect types {unknown}")
    if (r["kind"] == "normal") != (not types):
        raise ValueError(f"{root}/meta.json: image {r['stem']}: kind {r['kind']!r} but defect types {list(types)}")
    d = os.path.join(root, r["release"], r["kind"], r["stem"])
    return ImageLevelRecord(
        file_name=os.path.join(d, r["stem"] + ".jpg"),
        template_file_name=os.path.join(d, f"template_{r['prefix']}.jpg"),
        piece=r["prefix"], family=r["family"], defect_types=types,
    )


def load_pretrain_records(root, held_out=HELD_OUT_FAMILIES, benchmark_seed=None) -> Tuple[List[ImageLevelRecord], Dict]:
    """
    Image-level records of a synthetic fabric set (its ``meta.json``); never opens
    ``Annotations/anno_train.json``.

    Raises ``ValueError`` (naming the file) if the set is not the generator's, was generated with
    ``benchmark_seed``, or contains a held-out family; ``FileNotFoundError`` if an image is missing.

    Returns:
        tuple(list[ImageLevelRecord], dict): records (``meta.json`` order) and a description of the
        set (root, generator, version, seed, config).
    """
    meta_path = os.path.join(root, "meta.json")
    if not os.path.isfile(meta_path):
        raise FileNotFoundError(f"{meta_path} not found: --data must be a folder written by "
                                "defect_det.data.synthetic.fabric.generate_fabric_dataset")
    with open(meta_path, encoding="utf-8") as f:
        meta = json.load(f)
    if meta.get("generator") != GENERATOR_NAME:
        raise ValueError(f"{meta_path}: not written by {GENERATOR_NAME} (generator {meta.get('generator')!r})")
    if benchmark_seed is not None and int(meta["seed"]) == int(benchmark_seed):
        raise ValueError(f"{meta_path}: generated with seed {meta['seed']}, the benchmark's seed: its images "
                         "overlap the benchmark's (test) images; generate the pre-training set with another seed")
    records = [image_level_record(m, root) for m in meta["images"]]
    leaked = sorted({r.family for r in records if r.family in held_out})
    if leaked:
        raise ValueError(
            f"{meta_path}: contains images of the held-out texture families {leaked} (held out for the "
            f"unseen-texture evaluation: {sorted(held_out)}); pre-training must not see them"
        )
    if not records:
        raise ValueError(f"{meta_path}: no images")
    for r in records[:1] + records[-1:]:
        for p in (r.file_name, r.template_file_name):
            if not os.path.isfile(p):
                raise FileNotFoundError(f"{meta_path}: image file {p} is missing")
    desc = OrderedDict([("root", os.path.abspath(root)), ("generator", meta["generator"]),
                        ("version", meta.get("version")), ("seed", meta["seed"]), ("config", meta.get("config"))])
    return records, desc


def build_labels(records: Sequence[ImageLevelRecord], families: Sequence[str]):
    """
    Image-level targets.

    Args:
        records: N records (only ``family`` and ``defect_types`` are read).
        families: the F family names (class order).
    Returns:
        tuple(Tensor, Tensor): family index (N,) int64 and defect presence (N, D) float32 multi-hot,
        D = len(DEFECT_TYPES) in :data:`DEFECT_TYPES` order (all zeros for a normal image).
    """
    fam_index = {f: i for i, f in enumerate(families)}
    type_index = {t: i for i, t in enumerate(DEFECT_TYPES)}
    fam = torch.zeros(len(records), dtype=torch.int64)
    defects = torch.zeros(len(records), len(DEFECT_TYPES), dtype=torch.float32)
    for i, r in enumerate(records):
        if r.family not in fam_index:
            raise ValueError(f"{r.file_name}: family {r.family!r} not in the label set {list(families)}")
        fam[i] = fam_index[r.family]
        for t in r.defect_types:
            defects[i, type_index[t]] = 1.0
    return fam, defects


def split_by_piece(records: Sequence[ImageLevelRecord], val_fraction, seed=0):
    """
    Train / validation split by piece (all images of one texture instance on the same side), the
    ``round(val_fraction * pieces)`` validation pieces drawn with ``seed``.

    Returns:
        tuple(list[int], list[int]): train and validation indices into ``records``.
    """
    pieces = sorted({r.piece for r in records})
    n_val = int(round(val_fraction * len(pieces)))
    if val_fraction > 0 and len(pieces) > 1:
        n_val = min(max(n_val, 1), len(pieces) - 1)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5A11]))
    val = {pieces[i] for i in rng.permutation(len(pieces))[:n_val]}
    train_idx = [i for i, r in enumerate(records) if r.piece not in val]
    val_idx = [i for i, r in enumerate(records) if r.piece in val]
    return train_idx, val_idx


# ----------------------------------------------------------------------------------------------
# input pipeline
# ----------------------------------------------------------------------------------------------
def normalize_input(image, template, input_mode, pixel_mean, pixel_std):
    """
    The backbone input, as Detectron2 / TemplateRCNN compute it.

    Args:
        image, template: (3, H, W) float tensors in 0..255 (``template`` unused in image mode).
        pixel_mean, pixel_std: (3, 1, 1) tensors (``MODEL.PIXEL_MEAN`` / ``PIXEL_STD``).
    Returns:
        (3, H, W) float tensor: ``(I - mean) / std`` or ``(I - T) / (2 * std)``.
    """
    if input_mode == "image":
        return (image - pixel_mean) / pixel_std
    return (image - template) / (2.0 * pixel_std)


def _chw(a):
    """HxWx3 array -> (3, H, W) float32 tensor."""
    return torch.from_numpy(np.ascontiguousarray(np.asarray(a, np.float32).transpose(2, 0, 1)))


def _jitter(img, b, c):
    """Brightness ``b`` and contrast ``c`` about the image mean; float32 HxWx3 in 0..255."""
    m = img.mean()
    return np.clip((img - m) * c + m * b, 0.0, 255.0)


class PretrainSample:
    """Reads, aligns and augments one record into an un-normalised (3, H, W) image (and template)."""

    def __init__(self, settings: PretrainSettings, image_format="BGR"):
        self.s = settings
        self.image_format = image_format
        self._shifts = {}  # file_name -> (dx, dy): the registration depends only on the two files

    def _align(self, file_name, image, template):
        """``align_template(image, template)`` (template_ops, as ``INPUT.TEMPLATE.ALIGN``) with the
        phase-correlation estimate computed once per image (it never rejects with its defaults)."""
        if file_name not in self._shifts:
            dx, dy, _ = estimate_translation(image, template)
            self._shifts[file_name] = (dx, dy)
        return warp_template(template, *self._shifts[file_name])

    def read(self, record: ImageLevelRecord):
        """HxWx3 uint8 image and (difference mode) its template, registered onto it if ``align``."""
        image = utils.read_image(record.file_name, format=self.image_format)
        if self.s.input_mode == "image":
            return image, None
        template = utils.read_image(record.template_file_name, format=self.image_format)
        if template.shape != image.shape:
            raise ValueError(f"template {record.template_file_name} has shape {template.shape} but its "
                             f"image {record.file_name} has {image.shape}")
        if self.s.align:
            template = self._align(record.file_name, image, template)
        return image, template

    def _geometry(self, img, g):
        h, w = img.shape[:2]
        if (g["nh"], g["nw"]) != (h, w):
            img = cv2.resize(img, (g["nw"], g["nh"]), interpolation=cv2.INTER_LINEAR)
        ph, pw = max(g["ch"] - g["nh"], 0), max(g["cw"] - g["nw"], 0)
        if ph or pw:
            img = cv2.copyMakeBorder(img, 0, ph, 0, pw, cv2.BORDER_REFLECT_101)
        img = img[g["y0"]:g["y0"] + g["ch"], g["x0"]:g["x0"] + g["cw"]]
        if g["hflip"]:
            img = img[:, ::-1]
        if g["vflip"]:
            img = img[::-1]
        return img

    def __call__(self, record: ImageLevelRecord, rng: Optional[np.random.Generator]):
        """
        Args:
            rng: the augmentation draw; None = no augmentation (validation: the full image).
        Returns:
            tuple(Tensor, Tensor or None): image and template, (3, H', W') float32 in 0..255.
        """
        image, template = self.read(record)
        if rng is not None:
            s = self.s
            h, w = image.shape[:2]
            f = rng.uniform(*s.scale)
            nh, nw = max(1, int(round(h * f))), max(1, int(round(w * f)))
            ch, cw = (nh, nw) if s.crop is None else (int(s.crop[0]), int(s.crop[1]))
            g = dict(nh=nh, nw=nw, ch=ch, cw=cw,
                     y0=int(rng.integers(0, max(nh - ch, 0) + 1)), x0=int(rng.integers(0, max(nw - cw, 0) + 1)),
                     hflip=bool(s.hflip and rng.random() < 0.5), vflip=bool(s.vflip and rng.random() < 0.5))
            bc = rng.uniform(1 - s.photometric, 1 + s.photometric, size=2) if s.photometric > 0 else None
            image = self._geometry(image, g).astype(np.float32)
            if bc is not None:
                image = _jitter(image, *bc)
            if template is not None:
                template = self._geometry(template, g).astype(np.float32)
                if bc is not None:
                    template = _jitter(template, *bc)
        return _chw(image), (None if template is None else _chw(template))


class IterationBatches(torch.utils.data.Dataset):
    """
    Item ``i`` = the training batch of iteration ``i``, a pure function of ``(seed, i)``: epoch
    ``e`` visits the training images in the order of a permutation drawn from
    ``SeedSequence([seed, 1, e])``, and slot ``j`` of iteration ``i`` is augmented with a generator
    seeded by ``SeedSequence([seed, 2, i, j])``. Resuming at iteration ``i`` therefore continues at
    exactly the same data position, with any number of loader workers.

    Returns (per item): ``(x (B, 3, H, W) float normalised input, family (B,) int64, defects (B, D) float)``.
    """

    def __init__(self, records, fam, defects, indices, settings: PretrainSettings, pixel_mean, pixel_std,
                 image_format="BGR"):
        self.records, self.fam, self.defects = records, fam, defects
        self.indices = list(indices)
        if not self.indices:
            raise ValueError("no training images")
        self.s = settings
        self.sample = PretrainSample(settings, image_format)
        self.pixel_mean, self.pixel_std = pixel_mean, pixel_std
        self._perm_cache = {}

    def __len__(self):
        return self.s.iters

    def _order(self, epoch):
        if epoch not in self._perm_cache:
            rng = np.random.default_rng(np.random.SeedSequence([self.s.seed, 1, epoch]))
            self._perm_cache = {epoch: rng.permutation(len(self.indices))}
        return self._perm_cache[epoch]

    def batch_indices(self, iteration):
        """Record indices of the batch of ``iteration`` (B,)."""
        n, b = len(self.indices), self.s.batch_size
        out = []
        for p in range(iteration * b, (iteration + 1) * b):
            out.append(self.indices[int(self._order(p // n)[p % n])])
        return out

    def __getitem__(self, iteration):
        xs = []
        idx = self.batch_indices(iteration)
        for j, i in enumerate(idx):
            rng = np.random.default_rng(np.random.SeedSequence([self.s.seed, 2, iteration, j]))
            image, template = self.sample(self.records[i], rng)
            xs.append(normalize_input(image, template, self.s.input_mode, self.pixel_mean, self.pixel_std))
        return torch.stack(xs), self.fam[idx], self.defects[idx]


# ----------------------------------------------------------------------------------------------
# model, losses, schedule, metrics
# ----------------------------------------------------------------------------------------------
def prepare_pretrain_cfg(cfg):
    """
    A copy of a detector config made fit for pre-training its bottom-up network: ``FREEZE_AT`` 0
    (every stage trains), SyncBN -> BN (one process; same parameter names). ``FrozenBN`` is refused
    (it never normalises: nothing to learn from scratch); pre-train with ``MODEL.RESNETS.NORM BN`` and
    load the result into a FrozenBN detector if wanted.
    """
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    norm = cfg.MODEL.RESNETS.NORM
    if norm == "FrozenBN":
        raise ValueError("MODEL.RESNETS.NORM is 'FrozenBN': a frozen backbone cannot be pre-trained from "
                         "scratch; pass MODEL.RESNETS.NORM BN (the weights load into a FrozenBN model too)")
    if norm in ("SyncBN", "naiveSyncBN", "nnSyncBN"):
        cfg.MODEL.RESNETS.NORM = "BN"
    return cfg


class BackbonePretrainNet(nn.Module):
    """
    Bottom-up network + global pooling of its last (largest-stride) stage + two linear heads.

    ``forward(x (N, 3, H, W))`` -> ``(family logits (N, F), defect logits (N, D))``.
    """

    def __init__(self, bottom_up: nn.Module, key_prefix: str, num_families: int, num_defects: int,
                 pool: str = "avg", defect_prior: float = 0.1):
        """
        Args:
            bottom_up: a Detectron2 ``Backbone`` (e.g. ``ResNet``) with ``output_shape()``.
            key_prefix: where its parameters live in the detector (``"backbone.bottom_up."``).
            defect_prior: initial presence probability of every defect type (bias = logit of it).
        """
        super().__init__()
        self.bottom_up = bottom_up
        self.key_prefix = key_prefix
        shapes = bottom_up.output_shape()
        self.feature = max(shapes, key=lambda k: shapes[k].stride)
        self.pool = pool
        c = shapes[self.feature].channels * (2 if pool == "avgmax" else 1)
        self.family_head = nn.Linear(c, num_families)
        self.defect_head = nn.Linear(c, num_defects)
        for head in (self.family_head, self.defect_head):
            nn.init.normal_(head.weight, std=0.01)
            nn.init.zeros_(head.bias)
        nn.init.constant_(self.defect_head.bias, math.log(defect_prior / (1 - defect_prior)))

    @classmethod
    def from_config(cls, cfg, num_families, num_defects=len(DEFECT_TYPES), pool="avg"):
        """Build the bottom-up network of ``cfg``'s backbone (``build_backbone``; FPN: its ``bottom_up``)."""
        cfg = prepare_pretrain_cfg(cfg)
        backbone = build_backbone(cfg)
        if hasattr(backbone, "bottom_up"):
            return cls(backbone.bottom_up, "backbone.bottom_up.", num_families, num_defects, pool)
        return cls(backbone, "backbone.", num_families, num_defects, pool)

    def forward(self, x):
        f = self.bottom_up(x)[self.feature]  # (N, C, H/s, W/s)
        if self.pool == "avg":
            z = f.mean(dim=(2, 3))
        elif self.pool == "max":
            z = f.amax(dim=(2, 3))
        else:
            z = torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], dim=1)
        return self.family_head(z), self.defect_head(z)


def pretrain_losses(family_logits, defect_logits, family, defects, defect_weight=1.0):
    """
    Args:
        family_logits (N, F), defect_logits (N, D), family (N,) int64, defects (N, D) float {0, 1}.
    Returns:
        dict: ``loss_family`` (cross-entropy), ``loss_defect`` (BCE, mean over N x D, times
        ``defect_weight``).
    """
    return {
        "loss_family": F.cross_entropy(family_logits, family),
        "loss_defect": defect_weight * F.binary_cross_entropy_with_logits(defect_logits, defects),
    }


def lr_factor(iteration, settings: PretrainSettings):
    """Learning-rate multiplier at ``iteration`` (0-based): linear warm-up from 0.001, then cosine to
    0 at ``iters`` or x0.1 at each ``steps`` fraction."""
    s = settings
    if s.schedule == "cosine":
        f = 0.5 * (1.0 + math.cos(math.pi * iteration / s.iters))
    else:
        f = 0.1 ** sum(iteration >= int(round(st * s.iters)) for st in s.steps)
    if iteration < s.warmup_iters:
        a = iteration / s.warmup_iters
        f *= 0.001 * (1 - a) + a
    return f


def average_precision(scores, labels):
    """
    Non-interpolated average precision (mean precision at each positive, ranked by score).

    Args:
        scores (N,) float, labels (N,) {0, 1}.
    Returns:
        float, or NaN without positives.
    """
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels) > 0.5
    n_pos = int(labels.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    hits = labels[order]
    prec = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(prec[hits].sum() / n_pos)


@torch.no_grad()
def evaluate(net, records, fam, defects, indices, sample: PretrainSample, settings: PretrainSettings,
             pixel_mean, pixel_std, device="cpu"):
    """
    Held-out metrics on full (un-augmented) images.

    Returns:
        dict: ``n``, ``loss``, ``loss_family``, ``loss_defect``, ``family_acc``, ``defect_map``
        (mean AP over the types with a positive), ``defect_ap`` (type -> AP), ``defect_f1`` (micro F1
        at probability 0.5), ``any_defect_acc`` (defective vs normal: max probability > 0.5), or
        ``{"n": 0}`` with no validation images.
    """
    if not indices:
        return {"n": 0}
    was_training = net.training
    net.eval()
    fl, dl = [], []
    try:
        bs = settings.batch_size
        for k in range(0, len(indices), bs):
            xs = []
            for i in indices[k:k + bs]:
                image, template = sample(records[i], None)
                xs.append(normalize_input(image, template, settings.input_mode, pixel_mean, pixel_std))
            groups = [torch.stack(xs)] if len({x.shape for x in xs}) == 1 else [x[None] for x in xs]
            for g in groups:
                a, b = net(g.to(device))
                fl.append(a.cpu())
                dl.append(b.cpu())
    finally:
        net.train(was_training)
    fl, dl = torch.cat(fl), torch.cat(dl)
    ft, dt = fam[indices], defects[indices]
    losses = pretrain_losses(fl, dl, ft, dt, settings.defect_weight)
    prob = torch.sigmoid(dl).numpy()
    tgt = dt.numpy()
    aps = OrderedDict()
    for j, t in enumerate(DEFECT_TYPES):
        ap = average_precision(prob[:, j], tgt[:, j])
        if not math.isnan(ap):
            aps[t] = round(ap, 4)
    pred = prob > 0.5
    tp = float((pred & (tgt > 0.5)).sum())
    denom = float(pred.sum() + (tgt > 0.5).sum())
    return OrderedDict([
        ("n", len(indices)),
        ("loss", float(sum(losses.values()))),
        ("loss_family", float(losses["loss_family"])),
        ("loss_defect", float(losses["loss_defect"])),
        ("family_acc", float((fl.argmax(1) == ft).float().mean())),
        ("defect_map", float(np.mean(list(aps.values()))) if aps else float("nan")),
        ("defect_f1", 2 * tp / denom if denom else float("nan")),
        ("any_defect_acc", float(((prob.max(1) > 0.5) == (tgt.max(1) > 0.5)).mean())),
        ("defect_ap", aps),
    ])


# ----------------------------------------------------------------------------------------------
# export
# ----------------------------------------------------------------------------------------------
def bottom_up_state_dict(net: BackbonePretrainNet, dtype=torch.float32):
    """The bottom-up weights under their detector names (``backbone.bottom_up.<name>``), CPU copies;
    floating tensors cast to ``dtype`` (integer buffers such as ``num_batches_tracked`` kept)."""
    out = OrderedDict()
    for k, v in net.bottom_up.state_dict().items():
        v = v.detach().cpu().clone()
        out[net.key_prefix + k] = v.to(dtype) if v.is_floating_point() else v
    return out


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def export_backbone(net: BackbonePretrainNet, path, author=AUTHOR, dtype=torch.float32):
    """
    Write ``{"model": bottom_up_state_dict(net), "__author__": author, "matching_heuristics": False}``
    (atomically: temp file + rename) and return its sha256.
    """
    ckpt = {"model": bottom_up_state_dict(net, dtype), "__author__": author, "matching_heuristics": False}
    tmp = path + ".tmp"
    torch.save(ckpt, tmp)
    os.replace(tmp, path)
    return sha256_file(path)


# ----------------------------------------------------------------------------------------------
# the training run
# ----------------------------------------------------------------------------------------------
def _atomic_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False, default=float)
    os.replace(tmp, path)


def _param_groups(net, weight_decay):
    decay, no_decay = [], []
    norm_types = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
    for m in net.modules():
        for name, p in m.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            (no_decay if isinstance(m, norm_types) or name == "bias" else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _backbone_config(cfg):
    """The config keys that shape the pre-trained network and its input (others do not matter)."""
    cfg = prepare_pretrain_cfg(cfg)
    return OrderedDict([
        ("MODEL.BACKBONE.NAME", cfg.MODEL.BACKBONE.NAME),
        ("MODEL.RESNETS", json.loads(json.dumps(cfg.MODEL.RESNETS))),
        ("MODEL.PIXEL_MEAN", list(cfg.MODEL.PIXEL_MEAN)),
        ("MODEL.PIXEL_STD", list(cfg.MODEL.PIXEL_STD)),
        ("INPUT.FORMAT", cfg.INPUT.FORMAT),
    ])


def _run_identity(settings, cfg, data_desc, families, n_train, n_val):
    return OrderedDict([
        ("settings", settings.to_dict()),
        ("backbone_config", _backbone_config(cfg)),
        ("data", OrderedDict([("root", data_desc["root"]), ("seed", data_desc["seed"]),
                              ("config", data_desc.get("config"))])),
        ("families", list(families)),
        ("train_images", n_train),
        ("val_images", n_val),
    ])


def _diff_keys(a, b, prefix=""):
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff_keys(va, vb, prefix + k + ".")
        elif va != vb:
            out.append(prefix + k)
    return out


def _read_metrics(path, upto):
    """Lines of ``metrics.jsonl`` with iteration <= ``upto`` (a resumed run rewrites the rest)."""
    if not os.path.isfile(path):
        return []
    keep = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                d = json.loads(line)
                if d.get("iteration", 0) <= upto:
                    keep.append(line)
    return keep


def run_pretraining(cfg, settings: PretrainSettings, data_root, output_dir, *, resume=False,
                    checkpoint_period=500, eval_period=None, log_period=20, stop_at=None, workers=0,
                    held_out=HELD_OUT_FAMILIES, benchmark_seed=None, command=None, save_dtype="float32",
                    extra_info=None):
    """
    Pre-train the bottom-up network of ``cfg`` on the set in ``data_root``; write into ``output_dir``:
    ``checkpoint.pth`` (every ``checkpoint_period`` iterations: model with heads, optimizer, schedule,
    iteration, RNG states, recent losses, elapsed time), ``metrics.jsonl`` (training losses every
    ``log_period``, validation metrics every ``eval_period``), and at the end ``backbone.pth``
    (:func:`export_backbone`) and ``backbone.json`` (the sidecar: command, run identity, data, time,
    final train / validation metrics, sha256).

    A run whose ``backbone.json`` exists with the same identity is not recomputed (returns that
    sidecar); a different one, or an existing checkpoint without ``resume``, is a ``FileExistsError``.

    Args:
        cfg: a detector config (``load_defect_cfg``); its backbone, PIXEL_MEAN/STD, INPUT.FORMAT and
            MODEL.DEVICE are used.
        stop_at (int or None): stop after this many iterations (checkpoint written), to continue
            later with ``resume=True``.
        save_dtype: "float32" or "float16" for the exported weights.
    Returns:
        dict: the sidecar (finished), or ``{"stopped_at": iteration, ...}`` when stopped early.
    """
    settings.validate()
    if save_dtype not in ("float32", "float16"):
        raise ValueError(f"save_dtype must be float32 or float16, got {save_dtype!r}")
    eval_period = checkpoint_period if eval_period is None else eval_period
    if checkpoint_period < 1 or log_period < 1 or eval_period < 0:
        raise ValueError(f"checkpoint_period ({checkpoint_period}) and log_period ({log_period}) must be >= 1, "
                         f"eval_period ({eval_period}) >= 0")
    os.makedirs(output_dir, exist_ok=True)
    ckpt_path = os.path.join(output_dir, CHECKPOINT_NAME)
    weights_path = os.path.join(output_dir, WEIGHTS_NAME)
    sidecar_path = os.path.join(output_dir, SIDECAR_NAME)
    metrics_path = os.path.join(output_dir, METRICS_NAME)

    records, data_desc = load_pretrain_records(data_root, held_out, benchmark_seed)
    families = tuple(f for f in TEXTURE_FAMILIES if f in {r.family for r in records})
    fam, defects = build_labels(records, families)
    train_idx, val_idx = split_by_piece(records, settings.val_fraction, settings.seed)
    # JSON round trip: the form it has in backbone.json / checkpoint.pth (lists, not tuples)
    identity = json.loads(json.dumps(_run_identity(settings, cfg, data_desc, families, len(train_idx), len(val_idx))))

    if os.path.isfile(sidecar_path):
        with open(sidecar_path, encoding="utf-8") as f:
            done = json.load(f)
        if identity == done.get("run") and os.path.isfile(weights_path) \
                and sha256_file(weights_path) == done.get("sha256"):
            logger.info(f"{sidecar_path}: this run is already finished ({weights_path}); nothing to do")
            done["already_finished"] = True
            return done
        differs = _diff_keys(identity, done.get("run", {})) or "its backbone.pth changed"
        raise FileExistsError(f"{output_dir} holds a finished pre-training that differs ({differs}); "
                              "choose another --output-dir")

    device = torch.device(cfg.MODEL.DEVICE)
    torch.manual_seed(settings.seed)
    net = BackbonePretrainNet.from_config(cfg, len(families), len(DEFECT_TYPES), settings.pool).to(device)
    opt = torch.optim.AdamW(_param_groups(net, settings.weight_decay), lr=settings.lr)
    start_iter, elapsed, window = 0, 0.0, deque(maxlen=max(log_period, 20))
    if os.path.isfile(ckpt_path):
        state = torch.load(ckpt_path, map_location="cpu")
        if not resume:
            raise FileExistsError(f"{ckpt_path} exists (iteration {state['iteration']}): pass --resume to "
                                  "continue it, or choose another --output-dir")
        if identity != state["run"]:
            raise ValueError(f"{ckpt_path}: cannot resume: the run differs in {_diff_keys(identity, state['run'])}")
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start_iter = int(state["iteration"])
        elapsed = float(state["elapsed_seconds"])
        window.extend(state["window"])
        torch.set_rng_state(state["rng"]["torch"])
        logger.info(f"resumed {ckpt_path} at iteration {start_iter}")
    elif resume:
        logger.info(f"--resume: no checkpoint in {output_dir}, starting from iteration 0")

    mean = torch.tensor(cfg.MODEL.PIXEL_MEAN, dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(cfg.MODEL.PIXEL_STD, dtype=torch.float32).view(-1, 1, 1)
    data = IterationBatches(records, fam, defects, train_idx, settings, mean, std, cfg.INPUT.FORMAT)
    val_sample = PretrainSample(settings, cfg.INPUT.FORMAT)
    stop = settings.iters if stop_at is None else max(min(int(stop_at), settings.iters), start_iter)

    metric_lines = _read_metrics(metrics_path, start_iter)
    with open(metrics_path, "w", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in metric_lines)

    def log_metrics(d):
        with open(metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(d, default=float) + "\n")

    def save_checkpoint(next_iter):
        state = {
            "iteration": next_iter, "model": net.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": {"iteration": next_iter, "schedule": settings.schedule},
            "rng": {"torch": torch.get_rng_state()}, "run": identity,
            "elapsed_seconds": elapsed, "window": list(window),
            "data_position": {"iteration": next_iter, "note": "batches are a pure function of (seed, iteration)"},
        }
        torch.save(state, ckpt_path + ".tmp")
        os.replace(ckpt_path + ".tmp", ckpt_path)

    def run_eval(it):
        t = time.perf_counter()
        m = evaluate(net, records, fam, defects, val_idx, val_sample, settings, mean, std, device)
        logger.info(f"iter {it}: validation ({m['n']} images, {time.perf_counter() - t:.1f}s): "
                    + ", ".join(f"{k} {v:.4f}" for k, v in m.items() if isinstance(v, float)))
        log_metrics({"iteration": it, "val": m})
        return m

    logger.info(f"pre-training {type(net.bottom_up).__name__} ({sum(p.numel() for p in net.bottom_up.parameters())} "
                f"parameters, pooled {net.feature}) on {len(train_idx)} images ({len(val_idx)} validation), "
                f"families {list(families)}, input {settings.input_mode}, iterations {start_iter}..{stop} of "
                f"{settings.iters}, batch {settings.batch_size}, {torch.get_num_threads()} threads")
    loader = torch.utils.data.DataLoader(data, batch_size=None, sampler=range(start_iter, stop),
                                         num_workers=workers)
    net.train()
    t_last, it_last = time.perf_counter(), start_iter
    t_mark = t_last
    for it, (x, ft, dt) in zip(range(start_iter, stop), loader):
        for g in opt.param_groups:
            g["lr"] = settings.lr * lr_factor(it, settings)
        fl, dl = net(x.to(device))
        losses = pretrain_losses(fl, dl, ft.to(device), dt.to(device), settings.defect_weight)
        loss = sum(losses.values())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"pre-training loss became {float(loss)} at iteration {it} ({losses})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if settings.clip_grad > 0:
            nn.utils.clip_grad_norm_(net.parameters(), settings.clip_grad)
        opt.step()
        acc = float((fl.argmax(1) == ft.to(device)).float().mean())
        window.append((float(losses["loss_family"]), float(losses["loss_defect"]), acc))
        done_iters = it + 1
        if done_iters % log_period == 0 or done_iters == stop:
            now = time.perf_counter()
            ips = (done_iters - it_last) / max(now - t_last, 1e-9)  # data wait included, evaluation not
            eta = (settings.iters - done_iters) / max(ips, 1e-9)
            recent = list(window)[-log_period:]
            lf, ld, la = (float(np.mean([w[k] for w in recent])) for k in range(3))
            eta_s = time.strftime("%H:%M:%S", time.gmtime(eta)) if eta < 86400 else f"{eta / 3600:.0f}h"
            logger.info(f"iter {done_iters}/{settings.iters}  loss {lf + ld:.4f} (family {lf:.4f}, defect {ld:.4f})  "
                        f"family_acc {la:.3f}  lr {opt.param_groups[0]['lr']:.2e}  {ips:.2f} it/s  ETA {eta_s}")
            log_metrics({"iteration": done_iters, "loss": lf + ld, "loss_family": lf, "loss_defect": ld,
                         "family_acc": la, "lr": opt.param_groups[0]["lr"], "it_per_s": ips})
            t_last, it_last = time.perf_counter(), done_iters
        if eval_period and done_iters % eval_period == 0 and done_iters < settings.iters:
            t_eval = time.perf_counter()
            run_eval(done_iters)
            t_last += time.perf_counter() - t_eval
        now = time.perf_counter()
        elapsed += now - t_mark
        t_mark = now
        if done_iters % checkpoint_period == 0 or done_iters == stop:
            save_checkpoint(done_iters)
    if stop < settings.iters:
        logger.info(f"stopped at iteration {stop} of {settings.iters}: {ckpt_path}; continue with --resume")
        return {"stopped_at": stop, "checkpoint": ckpt_path}

    t0 = time.perf_counter()
    val_metrics = run_eval(settings.iters)
    elapsed += time.perf_counter() - t0
    sha = export_backbone(net, weights_path, dtype=getattr(torch, save_dtype),
                          author=f"{AUTHOR} (input={settings.input_mode}, seed={settings.seed})")
    recent = list(window)[-log_period:]
    type_counts = OrderedDict((t, sum(t in r.defect_types for r in records)) for t in DEFECT_TYPES)
    sidecar = OrderedDict([
        ("weights", WEIGHTS_NAME), ("sha256", sha), ("size_bytes", os.path.getsize(weights_path)),
        ("format", "Detectron2 checkpoint {'model': {'" + net.key_prefix + "<name>': tensor}, "
                   "'__author__', 'matching_heuristics': False}; load with MODEL.WEIGHTS"),
        ("key_prefix", net.key_prefix), ("num_tensors", len(net.bottom_up.state_dict())),
        ("dtype", save_dtype),
        ("command", command), ("seed", settings.seed), ("iters", settings.iters),
        ("input_mode", settings.input_mode),
        ("seconds", round(elapsed, 1)),
        ("finished", time.strftime("%Y-%m-%dT%H:%M:%S%z")),
        ("threads", torch.get_num_threads()), ("torch", torch.__version__),
        ("labels", OrderedDict([("family", list(families)), ("defect_types", list(DEFECT_TYPES)),
                                ("uses_masks_or_boxes", False),
                                ("record_keys_read", list(IMAGE_LEVEL_KEYS))])),
        ("data", OrderedDict([("root", data_desc["root"]), ("generator", data_desc["generator"]),
                              ("version", data_desc["version"]), ("seed", data_desc["seed"]),
                              ("images", len(records)), ("normal_images", sum(r.is_normal for r in records)),
                              ("pieces", len({r.piece for r in records})),
                              ("train_images", len(train_idx)), ("val_images", len(val_idx)),
                              ("held_out_families", sorted(held_out)),
                              ("images_per_defect_type", type_counts),
                              ("generator_config", data_desc.get("config"))])),
        ("final_train", OrderedDict([("loss", float(np.mean([w[0] + w[1] for w in recent]))),
                                     ("loss_family", float(np.mean([w[0] for w in recent]))),
                                     ("loss_defect", float(np.mean([w[1] for w in recent]))),
                                     ("family_acc", float(np.mean([w[2] for w in recent]))),
                                     ("over_last_iterations", len(recent))])),
        ("val", val_metrics),
        ("run", identity),
    ])
    if extra_info:
        sidecar.update(extra_info)
    _atomic_json(sidecar_path, sidecar)
    logger.info(f"wrote {weights_path} ({sidecar['size_bytes'] / 1e6:.1f} MB, sha256 {sha}) and {sidecar_path}")
    return sidecar
