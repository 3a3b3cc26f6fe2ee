"""Backbones registered in Detectron2's BACKBONE_REGISTRY on import."""
from .basic_resnet import build_basic_resnet_backbone, build_basic_resnet_fpn_backbone

__all__ = ["build_basic_resnet_backbone", "build_basic_resnet_fpn_backbone"]
