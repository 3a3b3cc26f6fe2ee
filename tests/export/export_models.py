"""Shared by the export tests: tiny models of every exportable architecture (4-channel ResNet stem, 8-channel
FPN, 16-d box head) and blocky test images, so that tracing one takes about a second on a CPU."""
import os

import pytest
import torch
from detectron2.modeling import build_model

from defect_det.config import get_defect_cfg

from conftest import REPO  # noqa: E402

CPU = os.path.join(REPO, "configs/synthetic/faster_rcnn_R18_FPN_cpu.yaml")
SEGDEC = os.path.join(REPO, "configs/SegDecNet/synthetic_dagm_cpu.yaml")

TRACE_SIZE = (96, 128)
CHECK_SIZES = [(80, 160), (128, 112)]  # both differ from the tracing size, in height and in width

TINY = {"MODEL.RESNETS.STEM_OUT_CHANNELS": 4, "MODEL.RESNETS.RES2_OUT_CHANNELS": 4, "MODEL.FPN.OUT_CHANNELS": 8,
        "MODEL.ROI_BOX_HEAD.FC_DIM": 16, "MODEL.ROI_HEADS.NUM_CLASSES": 3, "MODEL.ROI_HEADS.SCORE_THRESH_TEST": 0.0,
        "TEST.DETECTIONS_PER_IMAGE": 20, "MODEL.RPN.PRE_NMS_TOPK_TEST": 200, "MODEL.RPN.POST_NMS_TOPK_TEST": 50,
        "MODEL.DEVICE": "cpu"}
# containment suppression (CONTAIN_THRESH_TEST 0.6 in the CPU config) stays on: the number of detections then
# varies with the input, which a traced model must follow

# name -> (meta-architecture / template mode, TR-Post, cascade, box-supervised mask with refinement)
RCNN_ARCHS = {
    "baseline": ("baseline", False, False, False),
    "cascade": ("baseline", False, True, False),
    "pre": ("pre", False, False, False),
    "inter": ("inter", False, False, False),
    "ptg+post": ("ptg", True, False, False),
    "none+post+cascade": ("none", True, True, False),
    "baseline+mask": ("baseline", False, False, True),
    "none+mask": ("none", False, False, True),  # the refinement reads the template: the file takes one
    "pre+mask": ("pre", False, False, True),
    "ptg+post+cascade+mask": ("ptg", True, True, True),
}


def rcnn_cfg(mode="baseline", post=False, cascade=False, mask=False, **overrides):
    """The tiny config of one R-CNN architecture (``RCNN_ARCHS``); ``overrides``: KEY=VALUE (dots as '__')."""
    cfg = get_defect_cfg()
    cfg.merge_from_file(CPU)
    opts = dict(TINY)
    if mode == "baseline":
        opts["MODEL.ROI_HEADS.NAME"] = "DefectCascadeROIHeads" if cascade else "DefectStandardROIHeads"
    else:
        opts.update({"MODEL.META_ARCHITECTURE": "TemplateRCNN", "MODEL.TEMPLATE.MODE": mode,
                     "MODEL.TEMPLATE.POST": post, "MODEL.TEMPLATE.PTG.HIDDEN_DIM": 8,
                     "MODEL.ROI_BOX_HEAD.CONTEXT_SCALE": 1.5,
                     "MODEL.ROI_HEADS.NAME": "RDDNCascadeROIHeads" if cascade else "RDDNStandardROIHeads"})
    if cascade:
        opts["MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG"] = True
    if mask:
        opts.update({"MODEL.MASK_ON": True, "MODEL.ROI_MASK_HEAD.NAME": "BoxSupervisedMaskHead",
                     "MODEL.ROI_MASK_HEAD.BOX_SUPERVISED": True, "MODEL.ROI_MASK_HEAD.REFINE.ENABLED": True,
                     "MODEL.ROI_MASK_HEAD.CONV_DIM": 8, "MODEL.ROI_MASK_HEAD.NUM_CONV": 2})
    opts.update({k.replace("__", "."): v for k, v in overrides.items()})
    for k, v in opts.items():
        cfg.merge_from_list([k, str(v)])
    return cfg


def segdec_cfg(**overrides):
    """configs/SegDecNet/synthetic_dagm_cpu.yaml at width 0.125 (64 x 64 inputs)."""
    cfg = get_defect_cfg()
    cfg.merge_from_file(SEGDEC)
    cfg.merge_from_list(["MODEL.SEGDEC.WIDTH", "0.125", "MODEL.SEGDEC.INPUT_SIZE", "(64, 64)", "MODEL.DEVICE", "cpu"])
    for k, v in overrides.items():
        cfg.merge_from_list([k.replace("__", "."), str(v)])
    return cfg


def build(cfg):
    """The eval-mode model of ``cfg`` with seed-0 weights."""
    torch.manual_seed(0)
    return build_model(cfg).eval()


def blocky_image(h, w, seed, channels=3):
    """(channels, h, w) uint8 of random 8 x 8 blocks (some structure for the RPN to fire on)."""
    g = torch.Generator().manual_seed(seed)
    small = torch.randint(0, 256, (1, channels, h // 8 + 1, w // 8 + 1), generator=g).float()
    big = torch.nn.functional.interpolate(small, scale_factor=8, mode="nearest")[0, :, :h, :w]
    return big.to(torch.uint8)


def rcnn_input(size, seed):
    """One input dict: image and template (the template: another blocky image), ``size`` = (H, W)."""
    h, w = size
    return {"image": blocky_image(h, w, seed), "template": blocky_image(h, w, seed + 100)}


@pytest.fixture(autouse=True, scope="module")
def _fast_cpu():
    """One thread; TorchScript's profiling executor off (it re-optimises a graph on its first calls, seconds
    per test; results are the same). Imported by each export test module (autouse there)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    with torch.jit.optimized_execution(False):
        yield
    torch.set_num_threads(n)
