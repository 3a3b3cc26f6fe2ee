"""Datasets registered on ``import defect_det``, found under ``$DETECTRON2_DATASETS`` (default ``./datasets``).

========================== ============================================================
name                       files (relative to $DETECTRON2_DATASETS)
========================== ============================================================
synthetic_fabric_train     synthetic_fabric/annotations/fabric_train.json  (seen textures)
synthetic_fabric_val       synthetic_fabric/annotations/fabric_val.json    (seen, carved from training)
synthetic_fabric_test      synthetic_fabric/annotations/fabric_test.json   (seen textures)
synthetic_fabric_unseen    synthetic_fabric/annotations/fabric_unseen.json (held-out texture families)
tianchi_fabric_{train,val,test}    tianchi_fabric/annotations/fabric_{train,val,test}.json
tianchi_aluminum_{train,val,test}  tianchi_aluminum/annotations/aluminum_{train,val,test}.json
========================== ============================================================

The ``_val`` splits exist when the converter ran with ``--val-size N`` (settings are chosen on them,
never on ``_test``). Image paths inside each json are relative to the dataset folder (``synthetic_fabric/`` etc.).
``make data`` writes the synthetic set; README.md explains converting the real Tianchi releases.
"""
import os

from detectron2.data import DatasetCatalog

from .tianchi import register_tianchi_aluminum, register_tianchi_fabric

_SPLITS = {
    "synthetic_fabric": (register_tianchi_fabric, "fabric", ("train", "val", "test", "unseen")),
    "tianchi_fabric": (register_tianchi_fabric, "fabric", ("train", "val", "test")),
    "tianchi_aluminum": (register_tianchi_aluminum, "aluminum", ("train", "val", "test")),
}


def datasets_root():
    """``$DETECTRON2_DATASETS`` or ``./datasets``."""
    return os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))


def register_all(root=None):
    root = datasets_root() if root is None else root
    for folder, (register, prefix, splits) in _SPLITS.items():
        image_root = os.path.join(root, folder)
        for split in splits:
            name = f"{folder}_{split}"
            if name in DatasetCatalog.list():
                continue
            json_file = os.path.join(image_root, "annotations", f"{prefix}_{split}.json")
            register(name, json_file, image_root)


register_all()
