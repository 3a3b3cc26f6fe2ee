"""ResNet-18/34 (BasicBlock) backbones of any width, for small CPU models.

Detectron2's ``build_resnet_backbone`` insists on ``RES2_OUT_CHANNELS == 64`` for R18/R34. These
builders compose the same Detectron2 parts (``BasicStem``, ``BasicBlock``, ``ResNet.make_stage``,
``FPN``) with the stem width ``MODEL.RESNETS.STEM_OUT_CHANNELS`` and the res2 width
``MODEL.RESNETS.RES2_OUT_CHANNELS`` (doubled at every later stage), so a 32-wide ResNet-18 costs
about a quarter of the standard one. Select with ``MODEL.BACKBONE.NAME:
"build_basic_resnet_fpn_backbone"`` (or ``"build_basic_resnet_backbone"`` without FPN).
"""
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import BACKBONE_REGISTRY, FPN
from detectron2.modeling.backbone.fpn import LastLevelMaxPool
from detectron2.modeling.backbone.resnet import BasicBlock, BasicStem, ResNet

__all__ = ["build_basic_resnet_backbone", "build_basic_resnet_fpn_backbone"]

_BLOCKS_PER_STAGE = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


@BACKBONE_REGISTRY.register()
def build_basic_resnet_backbone(cfg, input_shape: ShapeSpec) -> ResNet:
    """ResNet-18/34 whose res2..res5 have widths w, 2w, 4w, 8w (w = RES2_OUT_CHANNELS).

    Outputs ``res2..res5`` at strides 4, 8, 16, 32 (those in ``MODEL.RESNETS.OUT_FEATURES``),
    each (N, C_i, H/s, W/s).
    """
    r = cfg.MODEL.RESNETS
    if r.DEPTH not in _BLOCKS_PER_STAGE:
        raise ValueError(
            f"MODEL.RESNETS.DEPTH must be 18 or 34 for build_basic_resnet_backbone, got {r.DEPTH}"
        )
    if r.RES5_DILATION != 1 or r.NUM_GROUPS != 1 or any(r.DEFORM_ON_PER_STAGE):
        raise ValueError(
            "build_basic_resnet_backbone supports neither MODEL.RESNETS.RES5_DILATION != 1, "
            "NUM_GROUPS != 1 nor DEFORM_ON_PER_STAGE"
        )
    stem = BasicStem(in_channels=input_shape.channels, out_channels=r.STEM_OUT_CHANNELS, norm=r.NORM)
    stages = []
    in_ch, out_ch = r.STEM_OUT_CHANNELS, r.RES2_OUT_CHANNELS
    for i, n in enumerate(_BLOCKS_PER_STAGE[r.DEPTH]):
        first_stride = 1 if i == 0 else 2
        stages.append(
            ResNet.make_stage(
                BasicBlock, n, in_channels=in_ch, out_channels=out_ch,
                stride_per_block=[first_stride] + [1] * (n - 1), norm=r.NORM,
            )
        )
        in_ch, out_ch = out_ch, out_ch * 2
    return ResNet(stem, stages, out_features=r.OUT_FEATURES, freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT)


@BACKBONE_REGISTRY.register()
def build_basic_resnet_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """:func:`build_basic_resnet_backbone` + Detectron2's FPN (``MODEL.FPN.*``), P2..P6."""
    bottom_up = build_basic_resnet_backbone(cfg, input_shape)
    return FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
