"""Helpers the surface-defect loaders share (:mod:`.dagm`, :mod:`.kolektor`, :mod:`.ksdd2`, :mod:`.severstal`):
image size from the header, mask checks, the record of an image with a mask beside it, and registration
with the metadata the SegDecNet evaluators read."""
import os
from typing import Dict, Tuple

import numpy as np
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog

__all__ = []  # internal to the surface-defect loaders


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


def _register(name, loader, dataset, root):
    DatasetCatalog.register(name, loader)
    MetadataCatalog.get(name).set(evaluator_type="segdec", defect_dataset=dataset, image_root=root,
                                  stuff_classes=["background", "defect"])
