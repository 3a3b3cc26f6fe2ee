"""Deformable convolutions on torchvision's op and the DCN backbones (defect_det/modeling/backbone)."""
import os

import pytest
import torch
import torch.nn.functional as F
from detectron2.layers import DeformConv, ModulatedDeformConv
from detectron2.modeling import build_backbone
import detectron2.modeling.backbone.resnet as d2_resnet

import defect_det  # noqa: F401  (registers the backbones)
from defect_det.config import get_defect_cfg
from defect_det.modeling.backbone.basic_resnet import DeformBasicBlock
from defect_det.modeling.backbone.deform import (
    TorchvisionDeformBottleneckBlock,
    TorchvisionDeformConv,
    TorchvisionModulatedDeformConv,
)

from conftest import REPO  # noqa: E402


def _zero_offsets(x, conv):
    n, _, h, w = x.shape
    kh, kw = conv.kernel_size
    h_out, w_out = (F.conv2d(x, conv.weight, stride=conv.stride, padding=conv.padding,
                             dilation=conv.dilation, groups=conv.groups).shape[-2:])
    g = conv.deformable_groups
    return torch.zeros(n, 2 * g * kh * kw, h_out, w_out), torch.ones(n, g * kh * kw, h_out, w_out)


@pytest.mark.parametrize("modulated", [False, True])
@pytest.mark.parametrize("stride,dilation,groups,dgroups", [(1, 1, 1, 1), (2, 2, 2, 2)])
def test_zero_offsets_equal_conv2d(modulated, stride, dilation, groups, dgroups):
    torch.manual_seed(0)
    cls = TorchvisionModulatedDeformConv if modulated else TorchvisionDeformConv
    kw = dict(stride=stride, padding=dilation, dilation=dilation, groups=groups,
              deformable_groups=dgroups)
    conv = cls(4, 6, 3, bias=modulated, **kw)
    assert isinstance(conv, ModulatedDeformConv if modulated else DeformConv)
    if modulated:
        torch.nn.init.normal_(conv.bias)
    x = torch.randn(2, 4, 9, 11)
    offset, mask = _zero_offsets(x, conv)
    out = conv(x, offset, mask) if modulated else conv(x, offset)
    ref = F.conv2d(x, conv.weight, conv.bias, stride=stride, padding=dilation, dilation=dilation,
                   groups=groups)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_offset_layout_is_dy_dx():
    # sampling every tap one pixel to the right (dx = 1) = convolving the input shifted left
    torch.manual_seed(0)
    conv = TorchvisionDeformConv(3, 5, 3, padding=1)
    x = torch.randn(1, 3, 8, 10)
    offset = torch.zeros(1, 18, 8, 10)
    offset[:, 1::2] = 1.0
    out = conv(x, offset)
    ref = F.conv2d(x[..., 1:], conv.weight, padding=1)
    # column 0 differs only by what the padding supplies; the last column has no counterpart
    torch.testing.assert_close(out[..., 1:-1], ref[..., 1:], rtol=1e-4, atol=1e-5)


def test_bad_offset_channels_and_empty_input():
    conv = TorchvisionDeformConv(4, 6, 3, padding=1, deformable_groups=2)
    with pytest.raises(ValueError, match="deformable_groups=2"):
        conv(torch.randn(1, 4, 5, 5), torch.zeros(1, 18, 5, 5))
    with pytest.raises(ValueError, match="DEFORM_NUM_GROUPS"):
        TorchvisionDeformConv(6, 6, 3, deformable_groups=4)
    for shape in [(0, 4, 5, 5), (2, 4, 0, 5)]:
        x = torch.zeros(shape, requires_grad=True)
        out = conv(x, torch.zeros(shape[0], 36, shape[2], 5))
        assert tuple(out.shape) == (shape[0], 6, shape[2], 5)
        out.sum().backward()
        assert conv.weight.grad is not None


@pytest.mark.parametrize("modulated", [False, True])
def test_block_gradients_reach_offset_conv(modulated):
    torch.manual_seed(0)
    block = TorchvisionDeformBottleneckBlock(
        8, 16, bottleneck_channels=4, stride=2, norm="BN", deform_modulated=modulated
    )
    assert isinstance(block.conv2, TorchvisionModulatedDeformConv if modulated
                      else TorchvisionDeformConv)
    assert block.conv2.weight.std() > 0 and block.conv2_offset.weight.abs().sum() == 0
    block(torch.randn(2, 8, 12, 12)).square().sum().backward()
    assert block.conv2_offset.weight.grad.abs().sum() > 0


def _r50_dcn_cfg(name):
    cfg = get_defect_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs/Base-RCNN-FPN.yaml"))
    cfg.MODEL.BACKBONE.NAME = name
    cfg.MODEL.RESNETS.DEPTH = 50
    cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE = [False, True, True, True]
    return cfg


def test_resnet_dcn_fpn_builds_trains_and_matches_detectron2_keys():
    torch.manual_seed(0)
    ours = build_backbone(_r50_dcn_cfg("build_resnet_dcn_fpn_backbone"))
    d2 = build_backbone(_r50_dcn_cfg("build_resnet_fpn_backbone"))
    assert d2_resnet.DeformBottleneckBlock is not TorchvisionDeformBottleneckBlock  # Detectron2 untouched
    assert isinstance(d2.bottom_up.res3[0].conv2, DeformConv)
    assert not isinstance(d2.bottom_up.res3[0].conv2, TorchvisionDeformConv)
    assert isinstance(ours.bottom_up.res3[0].conv2, TorchvisionDeformConv)
    assert not hasattr(ours.bottom_up.res2[0], "conv2_offset")
    ours_sd, d2_sd = ours.state_dict(), d2.state_dict()
    assert list(ours_sd) == list(d2_sd)
    assert all(ours_sd[k].shape == d2_sd[k].shape for k in d2_sd)
    ours.load_state_dict(d2_sd)  # a Detectron2 DCN checkpoint loads as is

    ours.train()
    out = ours(torch.randn(1, 3, 64, 64))
    assert sorted(out) == ["p2", "p3", "p4", "p5", "p6"]
    sum(v.mean() for v in out.values()).backward()
    assert ours.bottom_up.res5[0].conv2_offset.weight.grad.abs().sum() > 0


def test_resnet_dcn_backbone_without_fpn_and_detectron2_untouched():
    saved = d2_resnet.DeformBottleneckBlock
    cfg = _r50_dcn_cfg("build_resnet_dcn_backbone")
    cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE = [False, False, False, True]
    cfg.MODEL.RESNETS.DEFORM_MODULATED = True
    bb = build_backbone(cfg)
    assert isinstance(bb.res5[0].conv2, TorchvisionModulatedDeformConv)
    assert d2_resnet.DeformBottleneckBlock is saved
    cfg.MODEL.RESNETS.RES5_DILATION = 3  # Detectron2's builder asserts
    with pytest.raises(AssertionError):
        build_backbone(cfg)
    assert d2_resnet.DeformBottleneckBlock is saved
    cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE = [True, True]
    with pytest.raises(ValueError, match="MODEL.RESNETS.DEFORM_ON_PER_STAGE"):
        build_backbone(cfg)


@pytest.mark.parametrize("modulated,groups", [(False, 1), (True, 2)])
def test_basic_resnet_dcn_forward_backward(modulated, groups):
    torch.manual_seed(0)
    cfg = get_defect_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs/synthetic/faster_rcnn_R18_FPN_cpu.yaml"))
    cfg.MODEL.RESNETS.STEM_OUT_CHANNELS = cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 8
    cfg.MODEL.FPN.OUT_CHANNELS = 8
    cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE = [False, True, True, True]
    cfg.MODEL.RESNETS.DEFORM_MODULATED = modulated
    cfg.MODEL.RESNETS.DEFORM_NUM_GROUPS = groups
    fpn = build_backbone(cfg)
    bu = fpn.bottom_up
    assert not isinstance(bu.res2[0], DeformBasicBlock)
    block = bu.res4[0]
    assert isinstance(block, DeformBasicBlock) and block.conv2.deformable_groups == groups
    assert block.conv2_offset.out_channels == (27 if modulated else 18) * groups
    assert block.conv2_offset.weight.abs().sum() == 0

    x = torch.randn(1, 3, 64, 64)
    # zero-initialised offsets (and mask 0.5 when modulated): like a plain BasicBlock at init
    plain = d2_resnet.BasicBlock(32, 32, norm="BN").eval()
    plain.load_state_dict(bu.res4[1].state_dict(), strict=False)
    feat = torch.randn(1, 32, 4, 4)
    if not modulated:
        torch.testing.assert_close(bu.res4[1].eval()(feat), plain(feat), rtol=1e-4, atol=1e-5)
    bu.res4[1].train()

    out = fpn(x)
    assert sorted(out) == ["p2", "p3", "p4", "p5", "p6"]
    sum(v.mean() for v in out.values()).backward()
    assert block.conv2_offset.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="DEFORM_NUM_GROUPS"):
        cfg.MODEL.RESNETS.DEFORM_NUM_GROUPS = 3
        build_backbone(cfg)
