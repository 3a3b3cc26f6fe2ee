"""Severstal Steel: ``train_images/*.jpg`` (256 x 1600) + ``train.csv`` of column-major RLE masks per class
(both CSV layouts; format: :mod:`.surface`), the RLE codec, and our seeded train / test split."""
import csv
import os
from typing import Dict, List, Sequence, Tuple

import numpy as np

from .surface_common import _register, _require_file

__all__ = [
    "SEVERSTAL_SHAPE",
    "load_severstal",
    "read_severstal_csv",
    "register_severstal",
    "rle_decode",
    "rle_encode",
    "severstal_split",
]

SEVERSTAL_SHAPE = (256, 1600)


def _parse_rle(rle: str, num_pixels: int) -> np.ndarray:
    """(K, 2) int64 array of 0-based (start, length) runs; ValueError on malformed input."""
    tokens = rle.split()
    if len(tokens) % 2:
        raise ValueError(f"RLE has an odd number of values ({len(tokens)}): needs start/length pairs")
    try:
        values = np.array([int(t) for t in tokens], dtype=np.int64).reshape(-1, 2)
    except ValueError:
        bad = next(t for t in tokens if not t.lstrip("-").isdigit())
        raise ValueError(f"RLE value {bad!r} is not an integer") from None
    starts, lengths = values[:, 0] - 1, values[:, 1]
    if len(values):
        if starts.min() < 0:
            raise ValueError(f"RLE start {int(starts.min()) + 1} < 1 (pixels are numbered from 1)")
        if lengths.min() < 1:
            raise ValueError(f"RLE run length {int(lengths.min())} < 1")
        ends = starts + lengths
        if ends.max() > num_pixels:
            k = int(np.argmax(ends))
            raise ValueError(f"RLE run ({int(starts[k]) + 1}, {int(lengths[k])}) ends at pixel "
                             f"{int(ends[k])}, beyond the mask's {num_pixels} pixels (mask size mismatch?)")
        if (starts[1:] < ends[:-1]).any():
            raise ValueError("RLE runs overlap or are not in increasing order")
    return np.stack([starts, lengths], axis=1) if len(values) else np.zeros((0, 2), np.int64)


def rle_decode(rle: str, shape: Tuple[int, int]) -> np.ndarray:
    """
    Decode a Severstal RLE string into an (H, W) uint8 mask in {0, 1}.

    Pixels are numbered 1..H*W column-major (down the first column, then the next); ``rle`` is
    ``"start length start length ..."``; an empty string is an empty mask.
    Raises ValueError for an odd count, non-integers, starts < 1, lengths < 1, overlapping or
    unordered runs, or a run beyond H*W.
    """
    h, w = int(shape[0]), int(shape[1])
    runs = _parse_rle(rle or "", h * w)
    flat = np.zeros(h * w, dtype=np.uint8)
    for s, n in runs:
        flat[s : s + n] = 1
    return flat.reshape((w, h)).T.copy()  # column-major


def rle_encode(mask: np.ndarray) -> str:
    """Inverse of :func:`rle_decode`: (H, W) mask (nonzero = 1) -> RLE string ("" if empty)."""
    if mask.ndim != 2:
        raise ValueError(f"rle_encode: expected an (H, W) mask, got shape {mask.shape}")
    flat = (np.asarray(mask).T.reshape(-1) != 0).astype(np.int8)  # column-major
    padded = np.concatenate([[0], flat, [0]])
    changes = np.flatnonzero(padded[1:] != padded[:-1])
    starts, ends = changes[0::2], changes[1::2]
    return " ".join(f"{s + 1} {e - s}" for s, e in zip(starts, ends))


def read_severstal_csv(csv_file: str, shape: Tuple[int, int] = SEVERSTAL_SHAPE) -> Dict[str, Dict[int, str]]:
    """
    Read ``train.csv`` (either header) into ``{ImageId: {ClassId: rle}}`` with only non-empty RLEs;
    every image named in the file is a key (possibly with an empty dict). Every RLE is validated
    against ``shape``; errors name ``csv_file:row``.
    """
    _require_file(csv_file, "Severstal annotations")
    out: Dict[str, Dict[int, str]] = {}
    with open(csv_file, "r", encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        if header == ["ImageId", "ClassId", "EncodedPixels"]:
            old = False
        elif header == ["ImageId_ClassId", "EncodedPixels"]:
            old = True
        else:
            raise ValueError(f"{csv_file}:1: unknown header {header}; expected "
                             "ImageId,ClassId,EncodedPixels or ImageId_ClassId,EncodedPixels")
        for row, fields in enumerate(reader, start=2):
            if not fields or not any(x.strip() for x in fields):
                continue
            if len(fields) != len(header):
                raise ValueError(f"{csv_file}:{row}: expected {len(header)} fields, got {len(fields)}: {fields}")
            if old:
                key, rle = fields
                image_id, _, class_id = key.strip().rpartition("_")
            else:
                image_id, class_id, rle = fields
            image_id = image_id.strip()
            if not image_id:
                raise ValueError(f"{csv_file}:{row}: empty image id")
            try:
                class_id = int(class_id)
            except ValueError:
                raise ValueError(f"{csv_file}:{row}: ClassId {class_id!r} is not an integer") from None
            if class_id not in (1, 2, 3, 4):
                raise ValueError(f"{csv_file}:{row}: ClassId must be 1..4, got {class_id}")
            try:
                _parse_rle(rle, shape[0] * shape[1])
            except ValueError as e:
                raise ValueError(f"{csv_file}:{row}: image {image_id} class {class_id}: malformed "
                                 f"EncodedPixels ({e})") from None
            classes = out.setdefault(image_id, {})
            if rle.strip():
                if class_id in classes:
                    raise ValueError(f"{csv_file}:{row}: second row for image {image_id} class {class_id}")
                classes[class_id] = rle.strip()
    return out


def severstal_split(image_ids: Sequence[str], split: str, test_fraction: float = 0.2, seed: int = 0):
    """Deterministic split of the sorted ids: a seeded permutation's first ``test_fraction`` is
    ``"test"``, the rest ``"train"``; ``"all"`` keeps every id. (Ours, not the paper's split.)"""
    ids = sorted(image_ids)
    if split == "all":
        return ids
    if split not in ("train", "test"):
        raise ValueError(f"severstal split must be 'train', 'test' or 'all', got {split!r}")
    order = np.random.default_rng(seed).permutation(len(ids))
    n_test = int(round(test_fraction * len(ids)))
    test = set(order[:n_test].tolist())
    return [x for i, x in enumerate(ids) if (i in test) == (split == "test")]


def load_severstal(root: str, split: str = "all", csv_name: str = "train.csv",
                   image_dir: str = "train_images", shape: Tuple[int, int] = SEVERSTAL_SHAPE) -> List[Dict]:
    """
    Args:
        root: folder with ``train.csv`` and ``train_images/``.
        split: ``"all"``, or ``"train"`` / ``"test"`` of :func:`severstal_split` (80 / 20).
        shape: (H, W) of every image (the release's 256 x 1600); the mapper checks it per image.
    """
    csv_file = os.path.join(root, csv_name)
    annotations = read_severstal_csv(csv_file, shape)
    images_root = os.path.join(root, image_dir)
    if not os.path.isdir(images_root):
        raise FileNotFoundError(f"Severstal image folder {images_root} not found")
    on_disk = {f for f in os.listdir(images_root) if f.lower().endswith(".jpg")}
    missing = sorted(set(annotations) - on_disk)
    if missing:
        raise FileNotFoundError(f"{csv_file}: {len(missing)} listed images are not in {images_root} "
                                f"(first: {missing[0]})")
    dicts = []
    for image_id in severstal_split(on_disk, split):
        rles = annotations.get(image_id, {})
        d = {"file_name": os.path.join(images_root, image_id), "height": shape[0], "width": shape[1],
             "image_id": image_id, "label": int(bool(rles)), "has_pixel_labels": True}
        if rles:
            d["rle"] = dict(rles)
        dicts.append(d)
    if not dicts:
        raise ValueError(f"Severstal: no images in {images_root} (split {split})")
    return dicts


def register_severstal(name, root, split):
    _register(name, lambda: load_severstal(root, split), "severstal", root)
