"""Loaders of the surface-defect datasets SegDecNet is evaluated on, from their real on-disk formats.

Every loader returns Detectron2 dataset dicts with

- ``file_name``, ``height``, ``width``, ``image_id`` (str, unique within the dataset);
- ``label``: 1 = defective image, 0 = defect-free;
- ``has_pixel_labels``: whether the image's pixel label exists (True for every image of these sets:
  defect-free images have an all-zero mask);
- the pixel label of defective images: ``sem_seg_file_name`` (an image, nonzero = defect), or, for
  Severstal, ``rle`` = ``{class_id: "start length ..."}`` (decode with :func:`rle_decode`, shape
  ``(height, width)``); defect-free images carry neither.

Formats (see also the shared DESIGN.md, "SegDecNet datasets"):

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

One module per dataset family: :mod:`.dagm`, :mod:`.kolektor` (KolektorSDD), :mod:`.ksdd2`,
:mod:`.severstal` (shared helpers: :mod:`.surface_common`). This module re-exports them and
registers the builtin names (:func:`register_all_surface`) on import.
"""
import os

from detectron2.data import DatasetCatalog

from .dagm import load_dagm, register_dagm
from .kolektor import KSDD_NUM_FOLDS, ksdd_folders, load_ksdd, register_ksdd
from .ksdd2 import load_ksdd2, register_ksdd2
from .severstal import (
    SEVERSTAL_SHAPE,
    load_severstal,
    read_severstal_csv,
    register_severstal,
    rle_decode,
    rle_encode,
    severstal_split,
)

__all__ = [
    "KSDD_NUM_FOLDS",
    "SEVERSTAL_SHAPE",
    "ksdd_folders",
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
