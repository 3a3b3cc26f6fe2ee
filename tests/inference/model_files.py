"""Shared by the inference tests: an untrained tiny model written as a config file + weights file, the way
a user hands a trained model to tools/predict.py and tools/calibrate.py."""
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from conftest import tiny_cfg

TR_PRE = {"MODEL.META_ARCHITECTURE": "TemplateRCNN", "MODEL.TEMPLATE.MODE": "pre",
          "MODEL.ROI_HEADS.NAME": "RDDNStandardROIHeads"}


def saved_model(names, tmp_path, **overrides):
    """(config file path, weights path) of ``tiny_cfg(names, tmp_path, **overrides)`` with seed-0 weights."""
    cfg = tiny_cfg(names, tmp_path, **overrides)
    torch.manual_seed(0)
    DetectionCheckpointer(build_model(cfg), save_dir=str(tmp_path)).save("init")
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(cfg.dump())
    return str(cfg_file), str(tmp_path / "init.pth")
