"""RDDN: paired mapper, template alignment, TemplateRCNN modes, context reference and TR-Post."""
import copy
import os

import cv2
import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

import defect_det  # noqa: F401
from defect_det.data import align_template, build_defect_mapper, warp_template
from defect_det.rddn import PairedDatasetMapper
from defect_det.engine import DefectTrainer
from defect_det.evaluation import normalize_test_results
from defect_det.rddn import context_boxes, region_similarity

from conftest import tiny_cfg

RDDN = {"MODEL.META_ARCHITECTURE": "TemplateRCNN", "MODEL.ROI_HEADS.NAME": "RDDNStandardROIHeads",
        "MODEL.ROI_BOX_HEAD.CONTEXT_SCALE": "1.0", "MODEL.TEMPLATE.PTG.HIDDEN_DIM": "16"}


def _texture(h, w, seed):
    rng = np.random.default_rng(seed)
    small = rng.integers(20, 180, size=(h // 4 + 1, w // 4 + 1, 3)).astype(np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)[:h, :w]


def _pair_files(tmp_path, h=60, w=90, offset=40, template=True):
    image = _texture(h, w, 0)
    img_path = str(tmp_path / "img.png")
    cv2.imwrite(img_path, image)
    d = {"file_name": img_path, "height": h, "width": w, "image_id": 0, "annotations": []}
    if template:
        t_path = str(tmp_path / "template.png")
        cv2.imwrite(t_path, np.clip(image.astype(int) + offset, 0, 255).astype(np.uint8))
        d["template_file_name"] = t_path
    return d


def _mapper(augs, usage="required", **kw):
    return PairedDatasetMapper(True, augmentations=augs, image_format="BGR", template_usage=usage, **kw)


# ---------------------------------------------------------------------------------------- mapper
def test_mapper_applies_identical_geometry_to_image_and_template(tmp_path):
    """template = image + 40 everywhere; after a random resize + flip + crop the two tensors must
    still differ by exactly 40 at every pixel (up to interpolation rounding), i.e. same geometry."""
    d = _pair_files(tmp_path)
    augs = [T.ResizeShortestEdge((70, 110), 400, "range"), T.RandomFlip(0.5),
            T.RandomCrop("relative_range", (0.7, 0.7))]
    mapper = _mapper(augs)
    shapes = set()
    for seed in range(6):
        np.random.seed(seed)
        out = mapper(dict(d))
        img, tpl = out["image"].int(), out["template"].int()
        assert img.shape == tpl.shape
        shapes.add(tuple(img.shape))
        diff = tpl - img
        assert (diff - 40).abs().max() <= 1, seed
    assert len(shapes) > 1  # the augmentation really varied


def test_mapper_missing_or_mismatched_template_is_a_clear_error(tmp_path):
    d = _pair_files(tmp_path, template=False)
    with pytest.raises(ValueError, match="img.png.*no 'template_file_name'"):
        _mapper([])(dict(d))
    assert "template" not in _mapper([], usage="optional")(dict(d))
    d = _pair_files(tmp_path)
    cv2.imwrite(d["template_file_name"], np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(ValueError, match="template.png has shape"):
        _mapper([])(dict(d))


def test_test_time_shift_is_deterministic_and_alignment_undoes_it(tmp_path):
    d = _pair_files(tmp_path, offset=0)
    kw = dict(shift_range=(5.0, 10.0), shift_at_test=True)
    m = PairedDatasetMapper(False, augmentations=[], image_format="BGR", template_usage="required", **kw)
    a, b = m(dict(d)), m(dict(d))
    assert torch.equal(a["template"], b["template"])
    err_shifted = (a["template"].float() - a["image"].float()).abs().mean()
    m_al = PairedDatasetMapper(False, augmentations=[], image_format="BGR", template_usage="required",
                               align=True, **kw)
    c = m_al(dict(d))
    err_aligned = (c["template"].float() - c["image"].float()).abs().mean()
    assert err_shifted > 3 * err_aligned, (err_shifted, err_aligned)


def test_align_template_recovers_a_known_translation():
    image = _texture(96, 128, 3)
    shifted = warp_template(image, 6.5, -4.0)
    aligned, (dx, dy) = align_template(image, shifted)
    assert abs(dx + 6.5) < 0.3 and abs(dy - 4.0) < 0.3
    inner = (slice(12, -12), slice(12, -12))
    assert np.abs(aligned[inner].astype(float) - image[inner]).mean() < 3.0


# ----------------------------------------------------------------------------- context / TR-Post
def test_context_boxes_are_concentric_and_clipped():
    boxes = torch.tensor([[10.0, 10.0, 30.0, 50.0], [0.0, 0.0, 20.0, 10.0], [90.0, 40.0, 100.0, 60.0]])
    ctx = context_boxes(boxes, (60, 100), 1.5)
    assert torch.allclose(ctx[0], torch.tensor([5.0, 0.0, 35.0, 60.0]))  # y clipped to [0, 60]
    assert torch.allclose(ctx[1], torch.tensor([0.0, 0.0, 25.0, 12.5]))  # clipped at 0
    assert torch.allclose(ctx[2], torch.tensor([87.5, 35.0, 100.0, 60.0]))  # clipped at w and h
    assert (ctx[:, 2] <= 100).all() and (ctx[:, 3] <= 60).all() and (ctx >= 0).all()
    # unclipped boxes keep their centre and grow by k
    inner = context_boxes(torch.tensor([[40.0, 20.0, 60.0, 40.0]]), (60, 100), 1.5)
    assert torch.allclose(inner, torch.tensor([[35.0, 15.0, 65.0, 45.0]]))


def test_region_similarity():
    f = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0], [3.0, 4.0]])
    g = torch.tensor([[0.0, 2.0], [0.0, 0.0], [1.0, 0.0], [6.0, 8.0]])
    assert torch.allclose(region_similarity(f, g), torch.tensor([0.0, 1.0, 0.0, 1.0]))


# ------------------------------------------------------------------------------- models
def _cfg(tiny_fabric, tmp_path, **kw):
    return tiny_cfg(tiny_fabric["names"], tmp_path, **{**RDDN, **kw})


def _batch(tiny_fabric, cfg, n=2, is_train=True):
    mapper = build_defect_mapper(cfg, is_train, [tiny_fabric["names"]["train"]])
    dicts = [d for d in DatasetCatalog.get(tiny_fabric["names"]["train"]) if d.get("annotations")]
    np.random.seed(0)
    return [mapper(copy.deepcopy(d)) for d in dicts[:n]]


@pytest.mark.parametrize("opts", [
    {"MODEL.TEMPLATE.MODE": "pre"},
    {"MODEL.TEMPLATE.MODE": "inter"},
    {"MODEL.TEMPLATE.MODE": "ptg"},
    {"MODEL.TEMPLATE.POST": "True"},
    {"MODEL.ROI_BOX_HEAD.CONTEXT_SCALE": "1.5"},
    {"MODEL.ROI_BOX_HEAD.CONTEXT_SCALE": "1.5", "MODEL.ROI_BOX_HEAD.CONTEXT_ONLY": "True",
     "MODEL.TEMPLATE.MODE": "pre"},
    {"MODEL.ROI_HEADS.NAME": "RDDNCascadeROIHeads", "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG": "True",
     "MODEL.ROI_BOX_HEAD.CONTEXT_SCALE": "1.5", "MODEL.TEMPLATE.POST": "True"},
    {"MODEL.TEMPLATE.MODE": "inter", "INPUT.TEMPLATE.SHIFT_RANGE": "(5.0, 10.0)",
     "INPUT.TEMPLATE.SHIFT_AT_TEST": "True", "INPUT.TEMPLATE.ALIGN": "True"},
], ids=["pre", "inter", "ptg", "post", "cr", "cr_only+pre", "cascade+cr+post", "inter_shift_align"])
def test_each_mode_trains_and_evaluates(tiny_fabric, tmp_path, opts):
    torch.manual_seed(0)
    cfg = _cfg(tiny_fabric, tmp_path, **{"SOLVER.MAX_ITER": "3", "DATASETS.TEST": f"('{tiny_fabric['names']['unseen']}',)", **opts})
    trainer = DefectTrainer(cfg)
    trainer.resume_or_load(resume=False)
    results = normalize_test_results(trainer.train(), list(cfg.DATASETS.TEST))
    box = results[tiny_fabric["names"]["unseen"]]["bbox"]
    assert "AP50" in box
    losses = trainer.storage.latest()
    assert ("loss_ptg" in losses) == (cfg.MODEL.TEMPLATE.MODE == "ptg")


def test_inter_gradients_reach_the_shared_backbone_from_both_branches(tiny_fabric, tmp_path):
    cfg = _cfg(tiny_fabric, tmp_path, **{"MODEL.TEMPLATE.MODE": "inter"})
    model = build_model(cfg)
    model.train()
    batch = _batch(tiny_fabric, cfg)
    leaves = []
    for x in batch:
        x["image"] = x["image"].float().requires_grad_(True)
        x["template"] = x["template"].float().requires_grad_(True)
        leaves.append((x["image"], x["template"]))
    grads = {}

    def keep_grad(module, inputs, output):
        output.register_hook(lambda g: grads.setdefault("res2", g.detach()))

    res2 = model.backbone.bottom_up.res2
    handle = res2.register_forward_hook(keep_grad)
    with EventStorage(0):
        losses = model(batch)
    sum(losses.values()).backward()
    handle.remove()
    for image, template in leaves:
        assert image.grad.abs().sum() > 0 and template.grad.abs().sum() > 0
    g = grads["res2"]  # (2N, C, H, W): rows [0, N) images, [N, 2N) templates, one shared stage
    n = len(batch)
    assert g.shape[0] == 2 * n and g[:n].abs().sum() > 0 and g[n:].abs().sum() > 0
    assert model.backbone.bottom_up.stem.conv1.weight.grad.abs().sum() > 0


def test_ptg_loss_uses_only_normal_samples(tiny_fabric, tmp_path):
    cfg = _cfg(tiny_fabric, tmp_path, **{"MODEL.TEMPLATE.MODE": "ptg"})
    model = build_model(cfg)
    model.train()
    batch = _batch(tiny_fabric, cfg)
    assert all("normal_image" in x for x in batch)  # the mapper attached one normal per defect image
    torch.manual_seed(0)
    loss = model.ptg_loss(batch)
    # same value when the defect images change: they do not enter the loss
    changed = [dict(x, image=torch.zeros_like(x["image"])) for x in batch]
    assert torch.allclose(model.ptg_loss(changed), loss)
    # and it equals the reconstruction error of the normal images alone
    only = [{"image": x["normal_image"], "is_normal": True} for x in batch]
    assert torch.allclose(model.ptg_loss(only), loss)
    # no normal sample: exactly zero, and the generators get zero gradient
    empty = [{k: v for k, v in x.items() if k != "normal_image"} for x in batch]
    zero = model.ptg_loss(empty)
    assert float(zero) == 0.0
    zero.backward()
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0.0 for p in model.ptg.parameters())
    loss.backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in model.ptg.parameters())


def test_post_with_identical_template_scores_zero_and_without_template_keeps_scores(tiny_fabric, tmp_path):
    opts = {"MODEL.ROI_HEADS.SCORE_THRESH_TEST": "-1.0", "TEST.DETECTIONS_PER_IMAGE": "30"}
    torch.manual_seed(0)
    base_model = build_model(_cfg(tiny_fabric, tmp_path, **opts)).eval()
    post_cfg = _cfg(tiny_fabric, tmp_path, **{**opts, "MODEL.TEMPLATE.POST": "True"})
    post_model = build_model(post_cfg).eval()
    post_model.load_state_dict(base_model.state_dict())  # TR-Post needs no retraining: same weights
    batch = _batch(tiny_fabric, post_cfg, n=1, is_train=False)
    with torch.no_grad():
        same = post_model([dict(batch[0], template=batch[0]["image"].clone())])[0]["instances"]
        assert len(same) > 0 and float(same.scores.max()) < 1e-5
        no_tpl = {k: v for k, v in batch[0].items() if k != "template"}
        a = post_model([no_tpl])[0]["instances"]
        b = base_model([no_tpl])[0]["instances"]
        # same model, batch of 1 vs [image; its own image as placeholder]: equal up to float noise
        assert torch.allclose(a.scores, b.scores, atol=1e-4)
        assert torch.allclose(a.pred_boxes.tensor, b.pred_boxes.tensor, atol=1e-2)
        real = post_model([batch[0]])[0]["instances"]
        assert float(real.scores.max()) > 1e-5


def test_template_modes_need_templates_at_loader_construction(tiny_fabric, tmp_path):
    from defect_det.data.datasets import register_tianchi_aluminum

    d = _pair_files(tmp_path, template=False)
    name = "tiny_no_templates"
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: [dict(d, annotations=[])])
        MetadataCatalog.get(name).set(thing_classes=["a"])
    cfg = _cfg(tiny_fabric, tmp_path, **{"MODEL.TEMPLATE.MODE": "pre"})
    with pytest.raises(ValueError, match="tiny_no_templates.*img.png.*MODE='pre'"):
        build_defect_mapper(cfg, True, [name])
    cfg = _cfg(tiny_fabric, tmp_path, **{"MODEL.TEMPLATE.POST": "True"})
    build_defect_mapper(cfg, False, [name])  # TR-Post: optional, no error
    assert register_tianchi_aluminum  # aluminum-style sets are registered without templates


def test_bad_template_config_is_a_clear_error(tiny_fabric, tmp_path):
    for opts, msg in [({"MODEL.TEMPLATE.MODE": "both"}, "MODEL.TEMPLATE.MODE"),
                      ({"MODEL.TEMPLATE.MODE": "pre", "MODEL.TEMPLATE.POST": "True"}, "MODEL.TEMPLATE.POST"),
                      ({"MODEL.ROI_BOX_HEAD.CONTEXT_SCALE": "0.5"}, "CONTEXT_SCALE"),
                      ({"MODEL.TEMPLATE.POST": "True", "MODEL.ROI_HEADS.NAME": "StandardROIHeads"},
                       "RDDNStandardROIHeads")]:
        with pytest.raises(ValueError, match=msg):
            build_model(_cfg(tiny_fabric, tmp_path, **opts))
