"""Meta-architectures registered in Detectron2's META_ARCH_REGISTRY on import."""
from .segdec import SegDecNet  # noqa: F401  (registers SegDecNet)
from .segdec_tta import SegDecNetWithTTA
from .template_rcnn import TEMPLATE_MODES, TemplateRCNN

__all__ = ["SegDecNetWithTTA", "TEMPLATE_MODES", "TemplateRCNN"]
