"""KolektorSDD: ``kos01..kos50/PartX.jpg`` + ``PartX_label.bmp``, with our 3-fold cross-validation by
commutator (format: :mod:`.surface`)."""
import os
from typing import Dict, List, Optional

from .surface_common import _record_with_mask, _register

__all__ = ["KSDD_NUM_FOLDS", "ksdd_folders", "load_ksdd", "register_ksdd"]

KSDD_NUM_FOLDS = 3


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


def register_ksdd(name, root, fold, split):
    """Register fold ``fold``'s ``train`` / ``test`` part of KolektorSDD (:func:`load_ksdd`)."""
    _register(name, lambda: load_ksdd(root, fold, split), "ksdd", root)
