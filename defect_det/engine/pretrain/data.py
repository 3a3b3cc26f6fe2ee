"""Data of backbone pre-training: generation of the pre-training set (never the benchmark's seed, never
its held-out families), image-level records read from ``meta.json`` (no box, no mask), labels, the
split by piece, and the input pipeline (:class:`PretrainSample`: read, align, augment, normalise;
:class:`IterationBatches`: the batch of iteration ``i`` as a pure function of ``(seed, i)``)."""
import dataclasses
import json
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

from detectron2.data import detection_utils as utils

from ...data.synthetic.fabric import (
    DEFECT_TYPES,
    GENERATOR_NAME,
    TEXTURE_FAMILIES,
    SyntheticFabricConfig,
    generate_fabric_dataset,
)
from ...data.template_ops import estimate_translation, warp_template
from .settings import FORBIDDEN_KEYS, HELD_OUT_FAMILIES, IMAGE_LEVEL_KEYS, PretrainSettings

__all__ = [
    "ImageLevelRecord",
    "IterationBatches",
    "PretrainSample",
    "benchmark_dataset_info",
    "build_labels",
    "check_families",
    "image_level_record",
    "load_pretrain_records",
    "normalize_input",
    "prepare_pretrain_data",
    "split_by_piece",
]

logger = logging.getLogger("defect_det.engine.pretrain")  # one logger for the whole package


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
    desc = OrderedDict([("root", portable_path(root)), ("generator", meta["generator"]),
                        ("version", meta.get("version")), ("seed", meta["seed"]), ("config", meta.get("config"))])
    return records, desc


def portable_path(path: str) -> str:
    """``path`` as recorded in results and weight sidecars, without this machine's absolute paths:
    ``$DETECTRON2_DATASETS/<relative>`` under the datasets root (default ``./datasets``), else relative to
    the working directory when inside it, else the absolute path."""
    path = os.path.realpath(path)
    datasets = os.path.realpath(os.environ.get("DETECTRON2_DATASETS", "datasets"))
    if path == datasets or path.startswith(datasets + os.sep):
        return os.path.join("$DETECTRON2_DATASETS", os.path.relpath(path, datasets))
    cwd = os.path.realpath(os.getcwd())
    return os.path.relpath(path, cwd) if path.startswith(cwd + os.sep) else path


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
