"""Shared by the weak-mask test modules: a tiny box-supervised config and blocky test images."""
import os

import pytest
import torch

from defect_det.config import get_defect_cfg

from conftest import REPO

BASELINE = os.path.join(REPO, "configs/RDDN/synthetic/faster_rcnn_R18_FPN_baseline.yaml")
WEAK = {"MODEL.MASK_ON": "True", "MODEL.ROI_MASK_HEAD.NAME": "BoxSupervisedMaskHead",
        "MODEL.ROI_MASK_HEAD.BOX_SUPERVISED": "True", "INPUT.MASK_FORMAT": "bitmask",
        "MODEL.TEMPLATE.PTG.HIDDEN_DIM": "16"}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: one torch thread (two threads beside another CPU job ran ~40x slower here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _cfg(**overrides):
    cfg = get_defect_cfg()
    cfg.merge_from_file(BASELINE)
    for k, v in {**WEAK, "MODEL.ROI_HEADS.NUM_CLASSES": "3", **overrides}.items():
        cfg.merge_from_list([k, v])
    return cfg


def _blocky(h, w, seed):
    """(3, h, w) uint8 image of constant 16 x 16 blocks: strong edges between blocks, none inside."""
    g = torch.Generator().manual_seed(seed)
    small = torch.randint(0, 256, (1, 3, h // 16 + 1, w // 16 + 1), generator=g).float()
    big = torch.nn.functional.interpolate(small, scale_factor=16, mode="nearest")[0, :, :h, :w]
    return big.to(torch.uint8)
