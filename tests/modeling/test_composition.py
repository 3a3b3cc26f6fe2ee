"""The methods compose by config (issue 13): every cell of

    {baseline (GeneralizedRCNN), TemplateRCNN none / pre / inter / ptg, each with or without TR-Post}
    x {Standard, Cascade} x {hard, Sinkhorn NMS} x {no mask, box-supervised mask}

builds from a config, runs one training step (finite losses, gradients reach the backbone) and one
inference (Instances, with masks when the mask head is on) on in-memory images; the cells that cannot
work (TR-Post on a difference input: pre / inter) fail at build time with a message naming the key.
"""
import itertools
import os

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from defect_det.config import get_defect_cfg

from conftest import REPO  # noqa: E402
CPU = os.path.join(REPO, "configs/synthetic/faster_rcnn_R18_FPN_cpu.yaml")

MODES = ["baseline", "none", "pre", "inter", "ptg"]
CELLS = [(m, post, cascade, nms, mask)
         for m, post, cascade, nms, mask in itertools.product(MODES, (False, True), (False, True),
                                                               ("hard", "sinkhorn"), (False, True))
         if not (m == "baseline" and post)]  # TR-Post is a TemplateRCNN option
INVALID = {("pre", True), ("inter", True)}  # the template features of a difference input are undefined


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _cfg(mode, post, cascade, nms, mask):
    cfg = get_defect_cfg()
    cfg.merge_from_file(CPU)
    opts = {"MODEL.ROI_HEADS.NUM_CLASSES": 3, "MODEL.ROI_HEADS.NMS_TYPE": nms, "MODEL.DEVICE": "cpu",
            "MODEL.ROI_HEADS.SCORE_THRESH_TEST": 0.0, "TEST.DETECTIONS_PER_IMAGE": 20,
            "MODEL.RPN.POST_NMS_TOPK_TRAIN": 50, "MODEL.RPN.POST_NMS_TOPK_TEST": 50,
            "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 32, "MODEL.SINKHORN_NMS.MAX_REGIONS": 20}
    if mode == "baseline":
        heads = "DefectCascadeROIHeads" if cascade else "DefectStandardROIHeads"
    else:
        heads = "RDDNCascadeROIHeads" if cascade else "RDDNStandardROIHeads"
        opts.update({"MODEL.META_ARCHITECTURE": "TemplateRCNN", "MODEL.TEMPLATE.MODE": mode,
                     "MODEL.TEMPLATE.POST": post, "MODEL.TEMPLATE.PTG.HIDDEN_DIM": 16,
                     "MODEL.ROI_BOX_HEAD.CONTEXT_SCALE": 1.5})
    opts["MODEL.ROI_HEADS.NAME"] = heads
    if cascade:
        opts["MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG"] = True
    if mask:
        opts.update({"MODEL.MASK_ON": True, "MODEL.ROI_MASK_HEAD.NAME": "BoxSupervisedMaskHead",
                     "MODEL.ROI_MASK_HEAD.BOX_SUPERVISED": True, "MODEL.ROI_MASK_HEAD.REFINE.ENABLED": True,
                     "MODEL.ROI_MASK_HEAD.WEAK.WARMUP_ITERS": 0})
    for k, v in opts.items():
        cfg.merge_from_list([k, str(v)])
    return cfg


def _image(h, w, seed):
    g = torch.Generator().manual_seed(seed)
    small = torch.randint(0, 256, (1, 3, h // 16 + 1, w // 16 + 1), generator=g).float()
    return torch.nn.functional.interpolate(small, scale_factor=16, mode="nearest")[0, :, :h, :w].to(torch.uint8)


def _inputs(train, h=96, w=128):
    """Two images with two boxes each (templates: the image with the defects painted over), one
    defect-free image (PTG's normal image)."""
    out = []
    for i in range(3):
        image = _image(h, w, i)
        template = image.clone()
        d = {"image": image, "height": h, "width": w, "file_name": f"img{i}.png"}
        boxes = [[8.0, 8.0, 56.0, 40.0], [60.0, 20.0, 120.0, 90.0]] if i < 2 else []
        for x0, y0, x1, y1 in boxes:
            image[:, int(y0):int(y1), int(x0):int(x1)] = 255 - template[:, int(y0):int(y1), int(x0):int(x1)]
        d["template"] = template
        d["normal_image"] = template.clone()
        d["is_normal"] = not boxes
        if train:
            inst = Instances((h, w))
            inst.gt_boxes = Boxes(torch.tensor(boxes).reshape(-1, 4))
            inst.gt_classes = torch.tensor([0, 2][: len(boxes)], dtype=torch.long)
            d["instances"] = inst
        out.append(d)
    return out


def _name(cell):
    mode, post, cascade, nms, mask = cell
    return "-".join([mode + ("+post" if post else ""), "cascade" if cascade else "standard", nms,
                     "mask" if mask else "nomask"])


@pytest.mark.parametrize("cell", CELLS, ids=[_name(c) for c in CELLS])
def test_every_combination_trains_one_step_and_infers(cell):
    mode, post, cascade, nms, mask = cell
    cfg = _cfg(*cell)
    if (mode, post) in INVALID:
        with pytest.raises(ValueError, match="MODEL.TEMPLATE.POST"):
            build_model(cfg)
        return
    torch.manual_seed(0)
    model = build_model(cfg).train()
    with EventStorage(0):
        losses = model(_inputs(train=True))
    for k, v in losses.items():
        assert torch.isfinite(v), (k, v)
    expected = {"loss_cls", "loss_rpn_cls"}
    if mask:
        expected |= {"loss_mask_projection", "loss_mask_pairwise"}
    if mode == "ptg":
        expected.add("loss_ptg")
    names = {k.rsplit("_stage", 1)[0] for k in losses}
    assert expected <= names, sorted(losses)
    sum(losses.values()).backward()
    stem = next(p for n, p in model.named_parameters() if "bottom_up" in n and p.requires_grad)
    assert stem.grad is not None and stem.grad.abs().sum() > 0

    model.eval()
    with torch.no_grad():
        out = model(_inputs(train=False))
    assert len(out) == 3
    for o in out:
        inst = o["instances"]
        assert inst.image_size == (96, 128)
        assert inst.has("pred_boxes") and inst.has("scores") and inst.has("pred_classes")
        assert len(inst) <= 20
        if mask:
            assert inst.has("pred_masks") and inst.pred_masks.shape[-2:] == (96, 128)
