"""ResNet-18/34 (BasicBlock) backbones of any width, for small CPU models.

Detectron2's ``build_resnet_backbone`` insists on ``RES2_OUT_CHANNELS == 64`` for R18/R34. These
builders compose the same Detectron2 parts (``BasicStem``, ``BasicBlock``, ``ResNet.make_stage``,
``FPN``) with the stem width ``MODEL.RESNETS.STEM_OUT_CHANNELS`` and the res2 width
``MODEL.RESNETS.RES2_OUT_CHANNELS`` (doubled at every later stage), so a 32-wide ResNet-18 costs
about a quarter of the standard one. Select with ``MODEL.BACKBONE.NAME:
"build_basic_resnet_fpn_backbone"`` (or ``"build_basic_resnet_backbone"`` without FPN).

Stages with ``MODEL.RESNETS.DEFORM_ON_PER_STAGE`` True use :class:`DeformBasicBlock` (second 3x3
conv deformable, on torchvision's op: runs on CPU), with ``DEFORM_MODULATED`` and
``DEFORM_NUM_GROUPS`` as in Detectron2's deformable bottleneck blocks.
"""
import torch.nn.functional as F
from torch import nn

from detectron2.layers import Conv2d, ShapeSpec
from detectron2.modeling.backbone import BACKBONE_REGISTRY, FPN
from detectron2.modeling.backbone.fpn import LastLevelMaxPool
from detectron2.modeling.backbone.resnet import BasicBlock, BasicStem, ResNet

from .deform import TorchvisionDeformConv, TorchvisionModulatedDeformConv, split_offset_mask

__all__ = ["DeformBasicBlock", "build_basic_resnet_backbone", "build_basic_resnet_fpn_backbone"]

_BLOCKS_PER_STAGE = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


class DeformBasicBlock(BasicBlock):
    """
    Detectron2's :class:`BasicBlock` whose second 3x3 conv (``conv2``, stride 1) is deformable:
    ``conv2_offset`` (a 3x3 conv, initialised to zero, so training starts from the plain block)
    predicts its offsets (and, if ``deform_modulated``, its sigmoid mask) from the output of
    ``conv1``, laid out as in Detectron2's ``DeformBottleneckBlock`` (same parameter names).
    ``conv2`` keeps the weight and norm Detectron2 initialised.
    """

    def __init__(
        self, in_channels, out_channels, *, stride=1, norm="BN", deform_modulated=False,
        deform_num_groups=1,
    ):
        """
        Args:
            in_channels, out_channels, stride, norm: as :class:`BasicBlock`.
            deform_modulated (bool): DCNv2 (offsets and mask) instead of DCNv1 (offsets).
            deform_num_groups (int): deformable groups; must divide ``out_channels``.
        """
        super().__init__(in_channels, out_channels, stride=stride, norm=norm)
        self.deform_modulated = deform_modulated
        conv_cls = TorchvisionModulatedDeformConv if deform_modulated else TorchvisionDeformConv
        self.conv2 = conv_cls.from_module(self.conv2, deformable_groups=deform_num_groups)
        # 2 (or 3 with the mask) values per kernel position and deformable group
        self.conv2_offset = Conv2d(
            out_channels, (27 if deform_modulated else 18) * deform_num_groups, kernel_size=3,
            padding=1,
        )
        nn.init.constant_(self.conv2_offset.weight, 0)
        nn.init.constant_(self.conv2_offset.bias, 0)

    def forward(self, x):
        """
        Args:
            x: (N, in_channels, H, W).

        Returns:
            (N, out_channels, H / stride, W / stride).
        """
        out = F.relu_(self.conv1(x))
        offset, mask = split_offset_mask(self.conv2_offset(out), self.deform_modulated)
        out = self.conv2(out, offset) if mask is None else self.conv2(out, offset, mask)
        out = out + (x if self.shortcut is None else self.shortcut(x))
        return F.relu_(out)


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
    if r.RES5_DILATION != 1 or r.NUM_GROUPS != 1:
        raise ValueError(
            "build_basic_resnet_backbone supports neither MODEL.RESNETS.RES5_DILATION != 1 "
            "nor NUM_GROUPS != 1"
        )
    deform_on = list(r.DEFORM_ON_PER_STAGE)
    if len(deform_on) != 4:
        raise ValueError(
            f"MODEL.RESNETS.DEFORM_ON_PER_STAGE must have 4 entries (res2..res5), got {deform_on}"
        )
    stem = BasicStem(in_channels=input_shape.channels, out_channels=r.STEM_OUT_CHANNELS, norm=r.NORM)
    stages = []
    in_ch, out_ch = r.STEM_OUT_CHANNELS, r.RES2_OUT_CHANNELS
    for i, n in enumerate(_BLOCKS_PER_STAGE[r.DEPTH]):
        first_stride = 1 if i == 0 else 2
        kwargs = {}
        if deform_on[i]:
            if out_ch % r.DEFORM_NUM_GROUPS != 0:
                raise ValueError(
                    f"MODEL.RESNETS.DEFORM_NUM_GROUPS ({r.DEFORM_NUM_GROUPS}) must divide the "
                    f"width of res{i + 2} ({out_ch})"
                )
            kwargs = dict(
                deform_modulated=r.DEFORM_MODULATED, deform_num_groups=r.DEFORM_NUM_GROUPS
            )
        stages.append(
            ResNet.make_stage(
                DeformBasicBlock if deform_on[i] else BasicBlock, n, in_channels=in_ch,
                out_channels=out_ch, stride_per_block=[first_stride] + [1] * (n - 1), norm=r.NORM,
                **kwargs,
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
