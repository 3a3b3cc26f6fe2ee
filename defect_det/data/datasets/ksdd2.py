"""KolektorSDD2: ``{train,test}/<id>.png`` + ``<id>_GT.png`` (format: :mod:`.surface`)."""
import os
from typing import Dict, List

from .surface_common import _record_with_mask, _register

__all__ = ["load_ksdd2", "register_ksdd2"]


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


def register_ksdd2(name, root, split):
    _register(name, lambda: load_ksdd2(root, split), "ksdd2", root)
