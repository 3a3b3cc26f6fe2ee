"""defect_det: a Detectron2 extension for industrial surface and fabric defect detection.

Importing it registers defect_det's datasets (under ``$DETECTRON2_DATASETS``) and evaluators;
``defect_det.config.add_defect_config(cfg)`` adds its config keys.
"""
from . import data  # noqa: F401  (registers datasets)
from . import evaluation  # noqa: F401  (registers evaluators)
from .modeling import backbone  # noqa: F401  (registers backbones)
from .modeling import roi_heads  # noqa: F401  (registers ROI heads)
from .modeling import meta_arch  # noqa: F401  (registers meta-architectures)
from .config import add_defect_config, get_defect_cfg

__version__ = "0.1.0"
__all__ = ["add_defect_config", "get_defect_cfg"]
