"""Config keys added by defect_det.

``add_defect_config(cfg)`` is the single entry point; it calls one ``add_*_config`` function per
concept, each defined next to the code that reads its keys (``defect_det/<method>/config.py``,
``modeling/roi_heads/config.py``, ``solver/config.py``, ``evaluation/config.py``), which owns (adds,
documents and defaults) them. Call it on a Detectron2
``get_cfg()`` before ``merge_from_file`` of any defect_det config::

    from detectron2.config import get_cfg
    from defect_det.config import add_defect_config, get_defect_cfg

    cfg = get_cfg(); add_defect_config(cfg)       # or: cfg = get_defect_cfg()
    cfg.merge_from_file("configs/synthetic/faster_rcnn_R18_FPN_cpu.yaml")
"""
import logging

from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

from .data.defect_crop import add_defect_crop_config
from .evaluation.config import add_evaluation_config
from .modeling.roi_heads.config import add_roi_heads_config
from .rddn.config import add_rddn_config
from .segdec.config import add_segdec_config
from .sinkhorn_nms.config import add_sinkhorn_nms_config
from .solver.config import add_solver_config
from .weak_mask.config import add_weak_mask_config

__all__ = [
    "add_defect_config",
    "add_defect_crop_config",
    "add_evaluation_config",
    "add_rddn_config",
    "add_roi_heads_config",
    "add_segdec_config",
    "add_sinkhorn_nms_config",
    "add_solver_config",
    "add_weak_mask_config",
    "get_defect_cfg",
    "load_defect_cfg",
]


def add_defect_config(cfg):
    """
    Add every defect_det key to ``cfg`` (a Detectron2 CfgNode), in place, and return it.

    Idempotent through a marker of our own, ``cfg.DEFECT_DET.CONFIG_VERSION``, added with the keys
    (it survives ``clone()`` and a dump): a second call returns at once and keeps every value set
    since. Nothing else decides, so a host project's config may hold keys of its own anywhere
    (``TEST.EVALUATOR`` included). A key of the host that we also define gets our default: a warning
    names every such key whose value changed.
    """
    if "DEFECT_DET" in cfg:  # already added
        return cfg
    before = _flat(cfg)
    add_evaluation_config(cfg)
    add_defect_crop_config(cfg)
    add_solver_config(cfg)
    add_sinkhorn_nms_config(cfg)
    add_roi_heads_config(cfg)
    add_rddn_config(cfg)
    add_segdec_config(cfg)
    add_weak_mask_config(cfg)
    # the marker: version of defect_det's key set (no meaning beyond "add_defect_config ran")
    cfg.DEFECT_DET = CN()
    cfg.DEFECT_DET.CONFIG_VERSION = 1
    after = _flat(cfg)
    replaced = [k for k, v in before.items() if k not in after or after[k] != v]
    if replaced:
        logging.getLogger(__name__).warning(
            "add_defect_config: the config already had these keys, which defect_det also defines; their "
            "values are now defect_det's defaults (set them after add_defect_config to keep yours): "
            + ", ".join(replaced)
        )
    return cfg


def _flat(node, prefix=""):
    """{"A.B.C": value} of every leaf of a CfgNode."""
    out = {}
    for k, v in node.items():
        if isinstance(v, CN):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def get_defect_cfg():
    """A fresh Detectron2 default config with all defect_det keys added."""
    cfg = get_cfg()
    add_defect_config(cfg)
    return cfg


def load_defect_cfg(config_file, opts=()):
    """
    :func:`get_defect_cfg` merged with ``config_file`` and the ``KEY VALUE`` list ``opts`` (not
    frozen). A missing file is a ``FileNotFoundError`` naming it; ``MODEL.DEVICE`` "cuda" on a
    machine without a GPU falls back to "cpu" with a message.
    """
    import os

    import torch

    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"--config-file {config_file!r} does not exist")
    cfg = get_defect_cfg()
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        print(f"[defect_det] MODEL.DEVICE={cfg.MODEL.DEVICE} but no GPU is available: using cpu")
        cfg.MODEL.DEVICE = "cpu"
    return cfg
