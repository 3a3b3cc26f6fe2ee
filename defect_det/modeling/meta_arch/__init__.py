"""Meta-architectures registered in Detectron2's META_ARCH_REGISTRY on import."""
from .template_rcnn import TEMPLATE_MODES, TemplateRCNN

__all__ = ["TEMPLATE_MODES", "TemplateRCNN"]
