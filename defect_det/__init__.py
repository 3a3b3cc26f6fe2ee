"""defect_det: a Detectron2 extension for industrial surface and fabric defect detection.

Importing it registers defect_det's datasets (under ``$DETECTRON2_DATASETS``), evaluators, backbones,
meta-architectures, ROI / mask heads and box post-processors; ``defect_det.config.add_defect_config(cfg)``
adds its config keys. One subpackage per method (``rddn``, ``sinkhorn_nms``, ``segdec``, ``weak_mask``)
holds everything that method adds; the rest is shared (``data``, ``evaluation``, ``engine``, ``layers``,
``modeling``, ``solver``, ``utils``).
"""
from . import data  # noqa: F401  (registers datasets)
from . import evaluation  # noqa: F401  (registers evaluators)
from .modeling import backbone  # noqa: F401  (registers backbones)
from .modeling import roi_heads  # noqa: F401  (registers the shared ROI heads and hard NMS)
from . import rddn  # noqa: F401  (TemplateRCNN, RDDN ROI heads)
from . import sinkhorn_nms  # noqa: F401  (the Sinkhorn NMS post-processor)
from . import segdec  # noqa: F401  (SegDecNet)
from . import weak_mask  # noqa: F401  (box-supervised mask heads)
from .config import add_defect_config, get_defect_cfg

__version__ = "0.1.0"
__all__ = ["add_defect_config", "get_defect_cfg"]
