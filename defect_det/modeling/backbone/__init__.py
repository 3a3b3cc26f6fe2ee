"""Backbones registered in Detectron2's BACKBONE_REGISTRY on import."""
from .basic_resnet import build_basic_resnet_backbone, build_basic_resnet_fpn_backbone
from .deform import build_resnet_dcn_backbone, build_resnet_dcn_fpn_backbone  # noqa: F401

__all__ = ["build_basic_resnet_backbone", "build_basic_resnet_fpn_backbone"]
