"""Constructor defaults equal config defaults (issue 13): a class built directly with no arguments behaves
like one built from ``get_defect_cfg()``. For every configurable class of defect_det, each argument that
its ``from_config`` fills from the default config and that has a default in the constructor must have
the same value there."""
import inspect

import pytest
from detectron2.layers import ShapeSpec

from defect_det.config import get_defect_cfg

SHAPES = {f: ShapeSpec(channels=8, stride=s) for f, s in (("p2", 4), ("p3", 8), ("p4", 16), ("p5", 32), ("p6", 64))}


def _cases():
    from defect_det.rddn import PairedDatasetMapper, TemplateRCNN
    from defect_det.segdec import SegDecDatasetMapper, SegDecNet
    from defect_det.weak_mask import BoxSupervisedMaskHead, EntropyConstrainedRefiner

    def rcnn(cfg):
        cfg.MODEL.META_ARCHITECTURE = "TemplateRCNN"
        cfg.MODEL.DEVICE = "cpu"
        return TemplateRCNN.from_config(cfg)

    return {
        # (class, from_config(cfg) -> dict of constructor arguments, arguments not compared and why)
        "TemplateRCNN": (TemplateRCNN, rcnn, {}),
        "BoxSupervisedMaskHead": (BoxSupervisedMaskHead,
                                  lambda cfg: BoxSupervisedMaskHead.from_config(cfg, ShapeSpec(channels=8, width=7, height=7)),
                                  {"refiner": "built only with REFINE.ENABLED (None = off in both)"}),
        "EntropyConstrainedRefiner": (EntropyConstrainedRefiner, EntropyConstrainedRefiner.from_config, {}),
        "SegDecNet": (SegDecNet, SegDecNet.from_config,
                      {"pixel_mean": "Detectron2's 3-channel default vs a grayscale network",
                       "pixel_std": "as pixel_mean", "max_iter": "SOLVER.MAX_ITER is Detectron2's"}),
        "SegDecDatasetMapper": (SegDecDatasetMapper, lambda cfg: SegDecDatasetMapper.from_config(_gray(cfg), True),
                                {"segmented_files": "read from the datasets"}),
        "PairedDatasetMapper": (PairedDatasetMapper, lambda cfg: PairedDatasetMapper.from_config(cfg, True),
                                {"template_usage": "derived from the model (MODE none: not loaded in training)"}),
    }


def _gray(cfg):
    cfg.INPUT.FORMAT = "L"  # SegDecNet's default: one channel
    return cfg


@pytest.mark.parametrize("name", sorted(_cases()))
def test_constructor_defaults_equal_config_defaults(name):
    cls, from_config, skip = _cases()[name]
    args = from_config(get_defect_cfg())
    params = inspect.signature(cls.__init__).parameters
    compared = []
    for key, value in args.items():
        p = params.get(key)
        if p is None or p.default is inspect.Parameter.empty or key in skip:
            continue
        default = p.default
        if isinstance(value, (list, tuple)) and isinstance(default, (list, tuple)):
            value, default = tuple(value), tuple(default)
        assert default == value, f"{name}({key}=...) defaults to {default!r}, the config to {value!r}"
        compared.append(key)
    assert compared, f"{name}: nothing compared"
