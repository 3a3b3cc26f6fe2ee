"""Loaders of the surface-defect datasets SegDecNet is evaluated on, from their real on-disk formats.

Every loader returns Detectron2 dataset dicts with

- ``file_name``, ``height``, ``width``, ``image_id`` (str, unique within the dataset);
- ``label``: 1 = defective image, 0 = defect-free;
- ``has_pixel_labels``: whether the image's pixel label exists (True for every image of these sets:
  defect-free images have an all-zero mask);
- the pixel label of defective images: ``sem_seg_file_name`` (an image, nonzero = defect), or, for
  Severstal, ``rle`` = ``{class_id: "start length ..."}`` (decode with :func:`rle_decode`, shape
  ``(height, width)``); defect-free images carry neither.

Formats (see also /work/shared/DESIGN.md, "SegDecNet datasets"):

- **DAGM 2007** (:func:`load_dagm`): ``ClassN/{Train,Test}/####.PNG``, labels
  ``ClassN/{Train,Test}/Label/####_label.PNG`` (weak ellipses, 0/255) and ``Label/Labels.txt``: a
  first line ``1``, then one tab-separated row per image: ``id, 0/1 defective, image file, 0, label
  file or 0``. The synthetic DAGM generator also writes exact masks ``Label/####_mask.PNG``
  (``use_exact_masks=True`` loads those instead; not part of DAGM).
- **KolektorSDD** (:func:`load_ksdd`): ``kos01..kos50/PartX.jpg`` + ``PartX_label.bmp``; the label of
  an image is whether its mask has a nonzero pixel.
- **KolektorSDD2** (:func:`load_ksdd2`): ``{train,test}/<id>.png`` + ``<id>_GT.png``.
- **Severstal Steel** (:func:`load_severstal`): ``train_images/*.jpg`` (256 x 1600) + ``train.csv`` with
  header ``ImageId,ClassId,EncodedPixels`` (one row per defective image and class; images without
  a row are defect-free) or the early ``ImageId_ClassId,EncodedPixels`` (``<image>_<class>``, one row
  per image and class, empty ``EncodedPixels`` = no defect). RLE: space-separated ``start length``
  pairs, 1-based pixel numbers counted column-major (top to bottom, then left to right).

Errors name the file (and the row) at fault: missing files, malformed rows, malformed RLE. A mask
whose size differs from its image's is reported by the mapper, which reads both.
"""
import csv
import logging
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog

__all__ = [
    "KSDD_NUM_FOLDS",
    "load_dagm",
    "load_ksdd",
    "load_ksdd2",
    "load_severstal",
    "read_severstal_csv",
    "register_dagm",
    "register_ksdd",
    "register_ksdd2",
    "register_severstal",
    "register_all_surface",
    "rle_decode",
    "rle_encode",
    "severstal_split",
]

logger = logging.getLogger(__name__)

KSDD_NUM_FOLDS = 3
SEVERSTAL_SHAPE = (256, 1600)


def _image_size(path: str) -> Tuple[int, int]:
    """(height, width) from the image header."""
    try:
        with Image.open(path) as im:
            w, h = im.size
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: image not found") from None
    except Exception as e:  # PIL.UnidentifiedImageError and friends
        raise ValueError(f"{path}: cannot read the image ({e})") from e
    return h, w


def _require_file(path: str, what: str):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what}: {path} not found")


def _mask_is_defective(path: str) -> bool:
    try:
        with Image.open(path) as im:
            return bool(np.asarray(im).any())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: mask not found") from None
    except Exception as e:
        raise ValueError(f"{path}: cannot read the mask ({e})") from e


def _record_with_mask(dataset: str, file_name: str, mask_file: str, image_id) -> Dict:
    """Dataset dict of an image whose pixel label is a mask file beside it (KolektorSDD, KSDD2):
    image-level ``label`` = whether the mask has a defect pixel; ``sem_seg_file_name`` if so."""
    if not os.path.isfile(mask_file):
        raise FileNotFoundError(f"{dataset}: {file_name} has no label {mask_file}")
    h, w = _image_size(file_name)
    label = int(_mask_is_defective(mask_file))
    d = {"file_name": file_name, "height": h, "width": w, "image_id": image_id, "label": label,
         "has_pixel_labels": True}
    if label:
        d["sem_seg_file_name"] = mask_file
    return d


# ---------------------------------------------------------------------------------------------- DAGM
def load_dagm(class_root: str, split: str, use_exact_masks: bool = False) -> List[Dict]:
    """
    Args:
        class_root: the ``ClassN`` folder.
        split: ``"Train"`` or ``"Test"`` (case-insensitive).
        use_exact_masks: read ``Label/####_mask.PNG`` (synthetic DAGM only) instead of the weak
            ``Label/####_label.PNG`` named in ``Labels.txt``.
    """
    split = {"train": "Train", "test": "Test"}.get(split.lower())
    if split is None:
        raise ValueError(f"load_dagm: split must be 'Train' or 'Test', got {split!r}")
    folder = os.path.join(class_root, split)
    labels_txt = os.path.join(folder, "Label", "Labels.txt")
    _require_file(labels_txt, f"DAGM {split} labels of {class_root}")
    with open(labels_txt, "r", encoding="utf-8") as f:
        lines = [ln.rstrip("\r\n") for ln in f]
    if not lines or lines[0].strip() != "1":
        raise ValueError(f"{labels_txt}:1: expected the header line '1', got "
                         f"{lines[0] if lines else '(empty file)'!r}")
    dicts = []
    for row, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = [x.strip() for x in line.split("\t")]
        if len(fields) != 5:
            raise ValueError(f"{labels_txt}:{row}: expected 5 tab-separated fields (id, 0/1, image, "
                             f"0, label file or 0), got {len(fields)}: {line!r}")
        _, defective, image_name, _, label_name = fields
        if defective not in ("0", "1"):
            raise ValueError(f"{labels_txt}:{row}: the defective flag must be 0 or 1, got {defective!r}")
        file_name = os.path.join(folder, image_name)
        if not os.path.isfile(file_name):
            raise FileNotFoundError(f"{labels_txt}:{row}: image {file_name} not found")
        h, w = _image_size(file_name)
        stem = os.path.splitext(image_name)[0]
        d = {"file_name": file_name, "height": h, "width": w, "image_id": f"{split}/{stem}",
             "label": int(defective), "has_pixel_labels": True}
        if defective == "1":
            if label_name == "0":
                raise ValueError(f"{labels_txt}:{row}: defective image {image_name} has no label file")
            mask_name = f"{stem}_mask.PNG" if use_exact_masks else label_name
            mask_file = os.path.join(folder, "Label", mask_name)
            if not os.path.isfile(mask_file):
                raise FileNotFoundError(f"{labels_txt}:{row}: label {mask_file} not found")
            d["sem_seg_file_name"] = mask_file
        dicts.append(d)
    if not dicts:
        raise ValueError(f"{labels_txt}: no image rows")
    return dicts


# ----------------------------------------------------------------------------------------- KolektorSDD
def ksdd_folders(root: str) -> List[str]:
    """The sorted ``kos*`` folders of a KolektorSDD root."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"KolektorSDD root {root} not found")
    folders = sorted(f for f in os.listdir(root) if f.startswith("kos") and os.path.isdir(os.path.join(root, f)))
    if not folders:
        raise FileNotFoundError(f"KolektorSDD root {root} has no kos* folders")
    return folders


def load_ksdd(root: str, fold: Optional[int] = None, split: str = "all") -> List[Dict]:
    """
    Args:
        root: the folder holding ``kos01..kos50``.
        fold, split: 3-fold cross-validation by commutator: the sorted ``kos*`` folders with index
            ``i % 3 == fold`` are the test part of fold ``fold``, the others its train part.
            ``split`` is ``"train"``, ``"test"`` or ``"all"`` (every image, ``fold`` ignored).
            (The fold assignment is ours, not the original paper's split files.)
    """
    folders = ksdd_folders(root)
    if split != "all":
        if split not in ("train", "test") or fold not in range(KSDD_NUM_FOLDS):
            raise ValueError(f"load_ksdd: need split 'train'/'test'/'all' and fold in 0..2, got "
                             f"split={split!r} fold={fold!r}")
        folders = [f for i, f in enumerate(folders) if (i % KSDD_NUM_FOLDS == fold) == (split == "test")]
    dicts = []
    for folder in folders:
        path = os.path.join(root, folder)
        parts = sorted(f for f in os.listdir(path) if f.lower().endswith(".jpg"))
        for name in parts:
            stem = os.path.splitext(name)[0]
            file_name = os.path.join(path, name)
            mask_file = os.path.join(path, f"{stem}_label.bmp")
            dicts.append(_record_with_mask("KolektorSDD", file_name, mask_file, f"{folder}/{stem}"))
    if not dicts:
        raise ValueError(f"KolektorSDD: no PartX.jpg images under {root} (fold {fold}, {split})")
    return dicts


# ---------------------------------------------------------------------------------------- KolektorSDD2
def load_ksdd2(root: str, split: str) -> List[Dict]:
    """``root/{train,test}/<id>.png`` + ``<id>_GT.png``."""
    folder = os.path.join(root, split)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"KolektorSDD2: split folder {folder} not found")
    names = sorted(f for f in os.listdir(folder) if f.lower().endswith(".png") and not f.endswith("_GT.png"))
    dicts = []
    for name in names:
        stem = os.path.splitext(name)[0]
        file_name = os.path.join(folder, name)
        mask_file = os.path.join(folder, f"{stem}_GT.png")
        dicts.append(_record_with_mask("KolektorSDD2", file_name, mask_file, stem))
    if not dicts:
        raise ValueError(f"KolektorSDD2: no <id>.png images in {folder}")
    return dicts


# -------------------------------------------------------------------------------------------- Severstal
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


# ------------------------------------------------------------------------------------------ registering
def _register(name, loader, dataset, root):
    DatasetCatalog.register(name, loader)
    MetadataCatalog.get(name).set(evaluator_type="segdec", defect_dataset=dataset, image_root=root,
                                  stuff_classes=["background", "defect"])


def register_dagm(name, class_root, split, use_exact_masks=False):
    """Register a DAGM 2007 class folder's ``Train`` or ``Test`` split (:func:`load_dagm`)."""
    _register(name, lambda: load_dagm(class_root, split, use_exact_masks), "dagm", class_root)


def register_ksdd(name, root, fold, split):
    """Register fold ``fold``'s ``train`` / ``test`` part of KolektorSDD (:func:`load_ksdd`)."""
    _register(name, lambda: load_ksdd(root, fold, split), "ksdd", root)


def register_ksdd2(name, root, split):
    _register(name, lambda: load_ksdd2(root, split), "ksdd2", root)


def register_severstal(name, root, split):
    _register(name, lambda: load_severstal(root, split), "severstal", root)


def register_all_surface(root: str):
    """Builtin names, relative to ``root`` (= ``$DETECTRON2_DATASETS``):

    ======================================= ==============================================
    ``dagm_class{1..10}_{train,test}``       ``DAGM/Class{N}/{Train,Test}``
    ``synthetic_dagm_class{1..10}_{train,test}`` ``synthetic_dagm/Class{N}/{Train,Test}`` (weak labels)
    ``synthetic_dagm_exact_class{N}_{train,test}`` the same images with the exact masks
    ``ksdd_fold{0,1,2}_{train,test}``        ``KolektorSDD/kos*``
    ``ksdd2_{train,test}``                   ``KolektorSDD2/{train,test}``
    ``severstal_{train,test}``               ``severstal/{train.csv,train_images}`` (80/20 split)
    ======================================= ==============================================
    """
    todo = []
    for n in range(1, 11):
        for split in ("train", "test"):
            todo.append((f"dagm_class{n}_{split}", register_dagm,
                         (os.path.join(root, "DAGM", f"Class{n}"), split)))
            todo.append((f"synthetic_dagm_class{n}_{split}", register_dagm,
                         (os.path.join(root, "synthetic_dagm", f"Class{n}"), split)))
            todo.append((f"synthetic_dagm_exact_class{n}_{split}", register_dagm,
                         (os.path.join(root, "synthetic_dagm", f"Class{n}"), split, True)))
    for fold in range(KSDD_NUM_FOLDS):
        for split in ("train", "test"):
            todo.append((f"ksdd_fold{fold}_{split}", register_ksdd,
                         (os.path.join(root, "KolektorSDD"), fold, split)))
    for split in ("train", "test"):
        todo.append((f"ksdd2_{split}", register_ksdd2, (os.path.join(root, "KolektorSDD2"), split)))
        todo.append((f"severstal_{split}", register_severstal, (os.path.join(root, "severstal"), split)))
    registered = set(DatasetCatalog.list())
    for name, fn, args in todo:
        if name not in registered:
            fn(name, *args)


def _register_builtin():
    from .builtin import datasets_root

    register_all_surface(datasets_root())


_register_builtin()
