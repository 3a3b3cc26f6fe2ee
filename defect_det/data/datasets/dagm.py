"""DAGM 2007 (and the synthetic DAGM set): ``ClassN/{Train,Test}/####.PNG`` with weak ellipse labels
``Label/####_label.PNG`` listed in ``Label/Labels.txt`` (format: :mod:`.surface`)."""
import os
from typing import Dict, List

from .surface_common import _image_size, _register, _require_file

__all__ = ["load_dagm", "register_dagm"]


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


def register_dagm(name, class_root, split, use_exact_masks=False):
    """Register a DAGM 2007 class folder's ``Train`` or ``Test`` split (:func:`load_dagm`)."""
    _register(name, lambda: load_dagm(class_root, split, use_exact_masks), "dagm", class_root)
