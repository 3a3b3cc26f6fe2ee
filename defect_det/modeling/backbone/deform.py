"""Deformable convolutions on ``torchvision.ops.deform_conv2d`` (CPU and CUDA kernels), and
ResNet(+FPN) backbones that use them.

Detectron2's :class:`~detectron2.layers.DeformConv` and
:class:`~detectron2.layers.ModulatedDeformConv` have CUDA kernels only: on CPU, ``DeformConv``'s
forward falls back to torchvision (one deformable group) but its backward raises, and
``ModulatedDeformConv`` raises. The modules here subclass them, keep their constructor arguments,
parameter names (``weight``, optional ``bias``, ``norm``, ``activation``) and call signatures, and
only replace the kernel, so Detectron2 DCN checkpoints load unchanged. Both ops use the same offset
layout: for every deformable group and every kernel position ``(i, j)`` in row-major order, a
``(dy, dx)`` pair of channels; the modulation mask has one channel per group and kernel position.

Backbones (``MODEL.BACKBONE.NAME``):

- ``"build_resnet_dcn_backbone"``: Detectron2's ``build_resnet_backbone`` whose deformable blocks
  (``MODEL.RESNETS.DEFORM_ON_PER_STAGE``, ``DEFORM_MODULATED``, ``DEFORM_NUM_GROUPS``) get a ``conv2``
  computed by torchvision's op (:func:`use_torchvision_deform`, on the built model);
- ``"build_resnet_dcn_fpn_backbone"``: the same with Detectron2's FPN, as
  ``build_resnet_fpn_backbone``.

Their state-dict keys equal those of Detectron2's builders with the same config.
"""
import logging

import torch
from torch.nn.modules.utils import _pair
from torchvision.ops import deform_conv2d

from detectron2.layers import DeformConv, ModulatedDeformConv, ShapeSpec
from detectron2.modeling.backbone import BACKBONE_REGISTRY
from detectron2.modeling.backbone.fpn import build_resnet_fpn_backbone
from detectron2.modeling.backbone.resnet import DeformBottleneckBlock, build_resnet_backbone

__all__ = [
    "TorchvisionDeformConv",
    "TorchvisionModulatedDeformConv",
    "TorchvisionDeformBottleneckBlock",
    "split_offset_mask",
    "use_torchvision_deform",
    "build_resnet_dcn_backbone",
    "build_resnet_dcn_fpn_backbone",
]

logger = logging.getLogger(__name__)


class _TorchvisionDeformMixin:
    """Forward shared by both torchvision-backed modules (``self`` is a Detectron2 deform conv)."""

    def _check_deformable_groups(self):
        if self.in_channels % self.deformable_groups != 0:
            raise ValueError(
                f"{type(self).__name__}: in_channels ({self.in_channels}) must be divisible by "
                f"deformable_groups ({self.deformable_groups}) (MODEL.RESNETS.DEFORM_NUM_GROUPS "
                "in ResNet backbones)"
            )

    def _output_hw(self, x):
        kh, kw = self.kernel_size
        return [
            max(0, (size + 2 * p - (d * (k - 1) + 1)) // s + 1)
            for size, p, d, k, s in zip(
                x.shape[-2:], _pair(self.padding), _pair(self.dilation), (kh, kw),
                _pair(self.stride),
            )
        ]

    def _deform(self, x, offset, mask):
        """
        Args:
            x: (N, C_in, H, W).
            offset: (N, 2 * deformable_groups * kh * kw, H_out, W_out), ``(dy, dx)`` per group and
                kernel position.
            mask: None, or (N, deformable_groups * kh * kw, H_out, W_out) modulation in [0, 1].

        Returns:
            (N, C_out, H_out, W_out), after ``norm`` and ``activation`` when set.
        """
        name = type(self).__name__
        if x.dim() != 4:
            raise ValueError(f"{name}: expected a 4-D input (N, C, H, W), got {tuple(x.shape)}")
        kh, kw = self.kernel_size
        # torchvision infers the number of offset groups from the channel count: check it is ours
        expected = 2 * self.deformable_groups * kh * kw
        if offset.dim() != 4 or offset.shape[1] != expected:
            raise ValueError(
                f"{name}: offset must be (N, 2 * deformable_groups * kh * kw = {expected}, H_out, "
                f"W_out) with deformable_groups={self.deformable_groups}, got {tuple(offset.shape)}"
            )
        if mask is not None and (mask.dim() != 4 or mask.shape[1] != expected // 2):
            raise ValueError(
                f"{name}: mask must be (N, deformable_groups * kh * kw = {expected // 2}, H_out, "
                f"W_out) with deformable_groups={self.deformable_groups}, got {tuple(mask.shape)}"
            )
        if x.numel() == 0:
            # torchvision rejects empty spatial sizes: return zeros of the right shape that stay
            # connected to every input and parameter (zero gradients), as Detectron2's layers do.
            zero = x.sum() * 0 + offset.sum() * 0 + self.weight.sum() * 0
            if mask is not None:
                zero = zero + mask.sum() * 0
            out = zero.expand(x.shape[0], self.weight.shape[0], *self._output_hw(x))
        else:
            out = deform_conv2d(
                x,
                offset,
                self.weight,
                bias=self.bias,
                stride=_pair(self.stride),
                padding=_pair(self.padding),
                dilation=_pair(self.dilation),
                mask=mask,
            )
        if self.norm is not None:
            out = self.norm(out)
        if self.activation is not None:
            out = self.activation(out)
        return out

    @classmethod
    def from_module(cls, conv, deformable_groups=None):
        """
        A module of this class with the configuration of ``conv`` that *shares* its parameters
        (so their initialisation is kept) and its ``norm`` / ``activation``.

        Args:
            conv: a Detectron2 ``DeformConv`` / ``ModulatedDeformConv`` or a (Detectron2)
                ``Conv2d``: anything with ``in_channels, out_channels, kernel_size, stride, padding,
                dilation, groups, weight`` and optionally ``bias, norm, activation``.
            deformable_groups (int or None): default: ``conv.deformable_groups``, else 1.
        """
        if deformable_groups is None:
            deformable_groups = getattr(conv, "deformable_groups", 1)
        bias = getattr(conv, "bias", None)
        kwargs = dict(
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            deformable_groups=deformable_groups,
            norm=getattr(conv, "norm", None),
            activation=getattr(conv, "activation", None),
        )
        if issubclass(cls, ModulatedDeformConv):
            kwargs["bias"] = bias is not None
        elif bias is not None:
            raise ValueError(f"{cls.__name__} has no bias, but {type(conv).__name__} has one")
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, **kwargs)
        new.weight = conv.weight
        if bias is not None:
            new.bias = conv.bias
        return new


class TorchvisionDeformConv(_TorchvisionDeformMixin, DeformConv):
    """
    Detectron2's :class:`DeformConv` (same constructor, parameters and ``forward(x, offset)``)
    computed by ``torchvision.ops.deform_conv2d``: forward and backward on CPU and CUDA.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._check_deformable_groups()

    def forward(self, x, offset):
        """
        Args:
            x: (N, C_in, H, W).
            offset: (N, 2 * deformable_groups * kh * kw, H_out, W_out).

        Returns:
            (N, C_out, H_out, W_out).
        """
        return self._deform(x, offset, None)


class TorchvisionModulatedDeformConv(_TorchvisionDeformMixin, ModulatedDeformConv):
    """
    Detectron2's :class:`ModulatedDeformConv` (DCNv2; same constructor, parameters and
    ``forward(x, offset, mask)``) computed by ``torchvision.ops.deform_conv2d``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._check_deformable_groups()

    def forward(self, x, offset, mask):
        """
        Args:
            x: (N, C_in, H, W).
            offset: (N, 2 * deformable_groups * kh * kw, H_out, W_out).
            mask: (N, deformable_groups * kh * kw, H_out, W_out), usually a sigmoid output.

        Returns:
            (N, C_out, H_out, W_out).
        """
        return self._deform(x, offset, mask)


def split_offset_mask(offset_mask, modulated):
    """
    Split the output of a block's ``conv2_offset`` the way Detectron2's ``DeformBottleneckBlock``
    does, so trained offset convs keep their meaning.

    Args:
        offset_mask: (N, 27 * G, H, W) if ``modulated`` else (N, 18 * G, H, W).
        modulated (bool): DCNv2 (offsets + mask) or DCNv1 (offsets only).

    Returns:
        offset (N, 18 * G, H, W) and mask (N, 9 * G, H, W) after a sigmoid, or None.
    """
    if not modulated:
        return offset_mask, None
    offset_x, offset_y, mask = torch.chunk(offset_mask, 3, dim=1)
    return torch.cat((offset_x, offset_y), dim=1), mask.sigmoid()


class TorchvisionDeformBottleneckBlock(DeformBottleneckBlock):
    """
    Detectron2's :class:`DeformBottleneckBlock` (same arguments, parameter names, initialisation and
    forward) whose ``conv2`` is a :class:`TorchvisionDeformConv` /
    :class:`TorchvisionModulatedDeformConv` sharing the weight Detectron2 initialised.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        conv_cls = (
            TorchvisionModulatedDeformConv if self.deform_modulated else TorchvisionDeformConv
        )
        self.conv2 = conv_cls.from_module(self.conv2)


def use_torchvision_deform(module: torch.nn.Module) -> torch.nn.Module:
    """
    Give every Detectron2 ``DeformBottleneckBlock`` inside ``module`` (a built backbone) a ``conv2`` that
    runs torchvision's op: :meth:`TorchvisionDeformConv.from_module` / :meth:`TorchvisionModulatedDeformConv.from_module`
    share the weight Detectron2 initialised, so parameter names, values and checkpoints are unchanged.
    Changes only this model instance (Detectron2's classes and module-level names are untouched).

    Returns:
        ``module``, converted in place.
    """
    for block in module.modules():
        if isinstance(block, DeformBottleneckBlock) and not isinstance(block.conv2, _TorchvisionDeformMixin):
            conv_cls = TorchvisionModulatedDeformConv if block.deform_modulated else TorchvisionDeformConv
            block.conv2 = conv_cls.from_module(block.conv2)
    return module


def _check_dcn_cfg(cfg, builder):
    r = cfg.MODEL.RESNETS
    deform = list(r.DEFORM_ON_PER_STAGE)
    if len(deform) != 4:
        raise ValueError(
            f"MODEL.RESNETS.DEFORM_ON_PER_STAGE must have 4 entries (res2..res5), got {deform}"
        )
    if r.DEPTH in (18, 34) and any(deform):
        raise ValueError(
            f"{builder}: MODEL.RESNETS.DEPTH {r.DEPTH} (BasicBlock) with DEFORM_ON_PER_STAGE: use "
            "MODEL.BACKBONE.NAME 'build_basic_resnet_backbone' / 'build_basic_resnet_fpn_backbone'"
        )
    if not any(deform):
        logger.warning(
            f"{builder}: MODEL.RESNETS.DEFORM_ON_PER_STAGE is all False; building a plain ResNet"
        )


def _check_no_detectron2_deform(backbone, builder):
    # guards against a Detectron2 version that builds its deformable convs outside DeformBottleneckBlock
    for name, m in backbone.named_modules():
        if isinstance(m, (DeformConv, ModulatedDeformConv)) and not isinstance(
            m, _TorchvisionDeformMixin
        ):
            raise RuntimeError(f"{builder}: {name} is Detectron2's {type(m).__name__}, which has no CPU kernel")
    return backbone


@BACKBONE_REGISTRY.register()
def build_resnet_dcn_backbone(cfg, input_shape: ShapeSpec):
    """
    Detectron2's ``build_resnet_backbone`` (``MODEL.RESNETS.*``) with the deformable blocks of
    ``DEFORM_ON_PER_STAGE`` computed by torchvision's op. Outputs as Detectron2's ResNet:
    ``res2..res5`` (those in ``OUT_FEATURES``), each (N, C_i, H / s_i, W / s_i).
    """
    _check_dcn_cfg(cfg, "build_resnet_dcn_backbone")
    backbone = use_torchvision_deform(build_resnet_backbone(cfg, input_shape))
    return _check_no_detectron2_deform(backbone, "build_resnet_dcn_backbone")


@BACKBONE_REGISTRY.register()
def build_resnet_dcn_fpn_backbone(cfg, input_shape: ShapeSpec):
    """
    Detectron2's ``build_resnet_fpn_backbone`` (``MODEL.RESNETS.*``, ``MODEL.FPN.*``) with the
    deformable blocks computed by torchvision's op. Outputs ``p2..p6``, each
    (N, FPN.OUT_CHANNELS, H / s, W / s).
    """
    _check_dcn_cfg(cfg, "build_resnet_dcn_fpn_backbone")
    backbone = use_torchvision_deform(build_resnet_fpn_backbone(cfg, input_shape))
    return _check_no_detectron2_deform(backbone, "build_resnet_dcn_fpn_backbone")
