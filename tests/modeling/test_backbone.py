"""The any-width ResNet-18/34 backbones (defect_det.modeling.backbone)."""
import pytest
import torch
from detectron2.modeling import build_backbone

import defect_det  # noqa: F401
from defect_det.config import get_defect_cfg


def _cfg(depth=18, width=32, name="build_basic_resnet_fpn_backbone"):
    cfg = get_defect_cfg()
    cfg.MODEL.BACKBONE.NAME = name
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    cfg.MODEL.RESNETS.DEPTH = depth
    cfg.MODEL.RESNETS.STEM_OUT_CHANNELS = width
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = width
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.FPN.OUT_CHANNELS = 16
    return cfg


@pytest.mark.parametrize("depth,blocks", [(18, [2, 2, 2, 2]), (34, [3, 4, 6, 3])])
def test_widths_blocks_and_strides(depth, blocks):
    bb = build_backbone(_cfg(depth, 24, "build_basic_resnet_backbone"))
    shapes = bb.output_shape()
    assert [shapes[f"res{i}"].channels for i in range(2, 6)] == [24, 48, 96, 192]
    assert [shapes[f"res{i}"].stride for i in range(2, 6)] == [4, 8, 16, 32]
    assert [len(getattr(bb, f"res{i}")) for i in range(2, 6)] == blocks
    out = bb(torch.randn(2, 3, 64, 96))
    assert tuple(out["res4"].shape) == (2, 96, 4, 6)


def test_fpn_variant_and_quarter_cost_of_standard_r18():
    fpn = build_backbone(_cfg(18, 32))
    out = fpn(torch.randn(1, 3, 64, 64))
    assert sorted(out) == ["p2", "p3", "p4", "p5", "p6"] and out["p2"].shape[1] == 16
    std = _cfg(18, 64, "build_resnet_fpn_backbone")
    n_std = sum(p.numel() for p in build_backbone(std).bottom_up.parameters())
    n_32 = sum(p.numel() for p in fpn.bottom_up.parameters())
    assert 0.2 < n_32 / n_std < 0.3  # conv weights scale with width^2


def test_bad_depth_is_a_clear_error():
    with pytest.raises(ValueError, match="MODEL.RESNETS.DEPTH"):
        build_backbone(_cfg(50, 32))
