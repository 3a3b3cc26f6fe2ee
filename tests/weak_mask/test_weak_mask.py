"""Box-supervised mask head (projection + affinity losses) and the entropy-constrained refinement."""
import copy
import io
import math
import os

import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

import defect_det  # noqa: F401
from defect_det.config import get_defect_cfg
from defect_det.data import build_defect_mapper
from defect_det.rddn import template_usage
from defect_det.engine import DefectTrainer
from defect_det.weak_mask import BoxSupervisedMaskHead, EntropyConstrainedRefiner
from defect_det.weak_mask.affinity import (
    image_cues,
    neighbour_offsets,
    neighbour_sum,
    pairwise_affinity,
    pool_cues,
    shift_to_neighbours,
)
from defect_det.weak_mask.refine import binary_entropy_from_logits
from defect_det.weak_mask.mask_head import (
    box_grid_targets,
    pairwise_loss,
    projection_loss,
    template_difference_loss,
)

from conftest import REPO, tiny_cfg

from weak_mask_models import BASELINE, WEAK, _blocky, _cfg, _one_thread  # noqa: F401  (_one_thread: autouse fixture)


def _inputs(n=2, h=96, w=128, train=True, normal=0):
    """n images with 2 GT boxes each, then ``normal`` defect-free ones (no GT box)."""
    out = []
    for i in range(n + normal):
        d = {"image": _blocky(h, w, i), "template": _blocky(h, w, 100 + i), "height": h, "width": w}
        d["normal_image"] = d["template"].clone()
        if train:
            inst = Instances((h, w))
            boxes = [[8.0, 8.0, 56.0, 40.0], [60.0, 20.0, 120.0, 90.0]] if i < n else []
            inst.gt_boxes = Boxes(torch.tensor(boxes).reshape(-1, 4))
            inst.gt_classes = torch.tensor([0, 2][: len(boxes)], dtype=torch.long)
            d["instances"] = inst
        out.append(d)
    return out


# ------------------------------------------------------------------------ projection loss
def test_box_grid_targets_rasterise_the_box_in_the_roi_grid():
    rois = torch.tensor([[10.0, 20.0, 66.0, 76.0]] * 3)                 # 56 px -> 2 px per cell (M = 28)
    gt = torch.tensor([[10.0, 20.0, 66.0, 76.0],                          # the ROI itself: every cell
                       [10.0, 20.0, 38.0, 76.0],                          # left half in x
                       [30.0, 40.0, 30.5, 40.5]])                         # thinner than a cell: one cell
    in_x, in_y = box_grid_targets(gt, rois, 28)
    assert in_x[0].all() and in_y[0].all()
    assert in_x[1].tolist() == [True] * 14 + [False] * 14 and in_y[1].all()
    assert in_x[2].sum() == 1 and in_y[2].sum() == 1 and in_x[2][10] and in_y[2][10]


def test_projection_loss_is_zero_for_the_filled_box_and_positive_otherwise():
    g = torch.Generator().manual_seed(0)
    rois = torch.tensor([[0.0, 0.0, 100.0, 80.0]]).repeat(6, 1) + torch.rand(6, 4, generator=g) * 10
    gt = rois + torch.tensor([15.0, 10.0, -20.0, -12.0]) * torch.rand(6, 1, generator=g)
    in_x, in_y = box_grid_targets(gt, rois, 28)
    filled = (in_y[:, :, None] & in_x[:, None, :]).float()                 # the box's filled rectangle
    assert projection_loss(filled, in_x, in_y) < 1e-5
    assert projection_loss(torch.zeros_like(filled), in_x, in_y) > 1.9     # empty mask: both dice = 1
    assert projection_loss(torch.ones_like(filled), in_x, in_y) > 0.05     # the whole ROI overshoots
    shrunk = filled.clone()
    shrunk[torch.arange(6), :, in_x.float().argmax(1)] = 0                 # drop the first box column
    assert projection_loss(shrunk, in_x, in_y) > 1e-3
    # any mask inside the box whose projections fill it is also fine (a "+" shape, not the rectangle)
    plus = torch.zeros_like(filled)
    rows, cols = in_y.float().argmax(1), in_x.float().argmax(1)
    plus[torch.arange(6), rows] = in_x.float()
    plus[torch.arange(6), :, cols] = torch.maximum(plus[torch.arange(6), :, cols], in_y.float())
    assert projection_loss(plus, in_x, in_y) < 1e-5


def test_head_projection_loss_uses_the_gt_class_channel():
    cfg = _cfg(**{"MODEL.ROI_MASK_HEAD.WEAK.PAIRWISE_WEIGHT": "0.0", "MODEL.ROI_MASK_HEAD.WEAK.TEMPLATE_WEIGHT": "0.0"})
    model = build_model(cfg)
    head = model.roi_heads.mask_head
    assert isinstance(head, BoxSupervisedMaskHead)
    inst = Instances((100, 100))
    inst.proposal_boxes = Boxes(torch.tensor([[10.0, 10.0, 66.0, 66.0], [0.0, 0.0, 56.0, 56.0]]))
    inst.gt_boxes = Boxes(torch.tensor([[24.0, 10.0, 52.0, 66.0], [0.0, 0.0, 56.0, 56.0]]))
    inst.gt_classes = torch.tensor([2, 0])
    in_x, in_y = box_grid_targets(inst.gt_boxes.tensor, inst.proposal_boxes.tensor, 28)
    box = (in_y[:, :, None] & in_x[:, None, :]).float()
    logits = torch.full((2, 3, 28, 28), -30.0)                             # other classes: empty masks
    logits[0, 2] = box[0] * 60 - 30
    logits[1, 0] = box[1] * 60 - 30
    with EventStorage(0):
        losses = head.box_supervised_losses(logits, [inst])
    assert losses["loss_mask_projection"] < 1e-5
    logits[0, 2], logits[0, 1] = logits[0, 1].clone(), logits[0, 2].clone()  # right mask, wrong channel
    with EventStorage(0):
        assert head.box_supervised_losses(logits, [inst])["loss_mask_projection"] > 0.5


# ------------------------------------------------------------------------ affinities
def _two_colour_image():
    """(1, 3, 64, 64) normalised-like image: left half colour a, right half colour b."""
    img = torch.zeros(1, 3, 64, 64)
    img[:, :, :, :32] = torch.tensor([1.0, -0.5, 0.2]).view(1, 3, 1, 1)
    img[:, :, :, 32:] = torch.tensor([-1.0, 0.8, -0.3]).view(1, 3, 1, 1)
    return img


def test_pairwise_loss_prefers_a_mask_along_the_colour_edge():
    cues, valid = image_cues(_two_colour_image())
    pooled = pool_cues(cues, [Boxes(torch.tensor([[0.0, 0.0, 64.0, 64.0]]))], (28, 28))
    offsets = neighbour_offsets(2)
    aff = pairwise_affinity(pooled[:, :3], offsets, theta=0.2)
    assert aff.shape == (1, 8, 28, 28) and not valid.any()
    inside = torch.ones(1, 28, 28, dtype=torch.bool)
    along = torch.full((1, 28, 28), -10.0)
    along[:, :, :14] = 10.0                                                # left half = the left colour
    across = torch.full((1, 28, 28), -10.0)
    across[:, :14] = 10.0                                                  # top half: cuts both colours
    l_along = pairwise_loss(along, aff, inside, offsets, tau=0.3)
    l_across = pairwise_loss(across, aff, inside, offsets, tau=0.3)
    assert l_along < 1e-3 and l_across > 0.1, (l_along, l_across)
    # only pixels inside the box count: outside it, the cut costs nothing
    top = torch.zeros(1, 28, 28, dtype=torch.bool)
    top[:, :10] = True
    assert pairwise_loss(across, aff, top, offsets, tau=0.3) < 1e-3


def test_template_difference_is_an_extra_affinity_cue():
    """Uniform colour, but the image - template difference has an edge: only with a valid template
    do edges across it get a low affinity."""
    image = torch.zeros(1, 3, 64, 64)
    template = image.clone()
    template[:, :, :, 32:] = 1.0                                          # |I - T| = sqrt(3) on the right
    cues, valid = image_cues(image, template, torch.tensor([True]))
    assert torch.allclose(cues[0, 3, :, 40], torch.full((64,), math.sqrt(3.0)))
    assert valid.tolist() == [True]
    pooled = pool_cues(cues, [Boxes(torch.tensor([[0.0, 0.0, 64.0, 64.0]]))], (28, 28))
    offsets = neighbour_offsets(2)
    k_right = offsets.index((0, 2))
    with_t = pairwise_affinity(pooled[:, :3], offsets, 0.2, pooled[:, 3:4], torch.tensor([True]), 0.2)
    without = pairwise_affinity(pooled[:, :3], offsets, 0.2, pooled[:, 3:4], torch.tensor([False]), 0.2)
    assert with_t[0, k_right, 5, 12] < 1e-3 and with_t[0, k_right, 5, 2] > 0.99   # across / inside
    assert without[0, k_right, 5, 12] > 0.99
    cues_none, valid_none = image_cues(image, template, torch.tensor([False]))
    assert not valid_none.any() and cues_none[0, 3].abs().max() == 0
    # outside-the-grid neighbours have affinity 0
    assert (with_t[0, k_right, :, -2:] == 0).all()


def test_neighbour_sum_matches_the_shifted_stack():
    g = torch.Generator().manual_seed(1)
    x, w = torch.rand(3, 2, 9, 7, generator=g), torch.rand(3, 8, 9, 7, generator=g)
    offsets = neighbour_offsets(2)
    ref = (w[:, :, None] * shift_to_neighbours(x, offsets)).sum(1)
    assert torch.allclose(neighbour_sum(x, w, offsets), ref, atol=1e-6)
    assert shift_to_neighbours(x, [(0, 2)])[0, 0, :, 0, 0].tolist() == x[0, :, 0, 2].tolist()


# ------------------------------------------------------------------------ refinement
def _random_case(seed=0, r=6, m=28):
    g = torch.Generator().manual_seed(seed)
    probs = torch.rand(r, 1, m, m, generator=g)
    probs[:, :, :4] = torch.where(probs[:, :, :4] > 0.5, 0.97, 0.02)      # some certainly confident rows
    aff = torch.rand(r, 8, m, m, generator=g)
    return probs, aff


@pytest.mark.parametrize("margin_step", [0.25, 0.0])
def test_refinement_never_changes_confident_pixels(margin_step):
    probs, aff = _random_case()
    refiner = EntropyConstrainedRefiner(iters=6, conf_thresh=0.9, pairwise_weight=1.0, margin_step=margin_step)
    out = refiner(probs, aff)
    confident = torch.maximum(probs, 1 - probs) >= 0.9
    assert confident.sum() > 100 and (~confident).sum() > 100
    assert torch.equal(out.uncertain, ~confident)
    assert torch.equal(out.probs[confident], probs[confident])              # bit for bit
    assert (out.probs[~confident] - probs[~confident]).abs().max() > 0.1   # the others did move


@pytest.mark.parametrize("margin_step", [0.25, 0.0])
def test_entropy_over_uncertain_pixels_never_increases(margin_step):
    probs, aff = _random_case(seed=3)
    refiner = EntropyConstrainedRefiner(iters=8, conf_thresh=0.95, pairwise_weight=1.0, margin_step=margin_step)
    out = refiner(probs, aff)
    h = out.entropy                                                        # (R, T + 1)
    assert h.shape == (6, 9)
    assert (h[:, 1:] - h[:, :-1] <= 1e-5).all(), h
    assert (h[:, -1] < h[:, 0] - 1.0).all()                               # strictly (and clearly) lower
    # the reported entropy is that of the returned probabilities on U
    u = out.uncertain
    q = out.probs.clamp(1e-6, 1 - 1e-6)
    direct = (-(q * q.log() + (1 - q) * (1 - q).log()) * u).flatten(1).sum(1)
    assert torch.allclose(direct, h[:, -1], rtol=1e-3)


def test_refinement_resolves_uncertain_pixels_from_their_neighbours():
    """A confident foreground square in a confident background, with a ring of uncertain pixels:
    uncertain pixels next to background (strongly tied to it) become background, those tied to the
    square become foreground, even when they start on the other side of 1/2."""
    m = 20
    probs = torch.full((1, 1, m, m), 0.02)
    probs[:, :, 6:14, 6:14] = 0.98
    probs[:, :, 4:6, 4:16] = 0.55          # uncertain, above 1/2, surrounded by background colour
    probs[:, :, 14:16, 4:16] = 0.55
    probs[:, :, 8:12, 6:8] = 0.45           # uncertain, below 1/2, inside the square
    colour = torch.zeros(1, 3, m, m)
    colour[:, :, 6:14, 6:14] = 1.0          # the square has its own colour; the ring looks like background
    offsets = neighbour_offsets(1)
    aff = pairwise_affinity(colour, offsets, theta=0.2)
    out = EntropyConstrainedRefiner(iters=5, conf_thresh=0.9, pairwise_weight=0.5, dilation=1)(probs, aff)
    assert (out.probs[:, :, 4:6, 4:16] < 0.2).all() and (out.probs[:, :, 14:16, 4:16] < 0.2).all()
    assert (out.probs[:, :, 8:12, 6:8] > 0.8).all()
    assert binary_entropy_from_logits(torch.tensor([0.0])).item() == pytest.approx(math.log(2))


def test_refinement_with_default_keys_recovers_a_noisy_ellipse():
    """An ellipse of its own colour; its mask probabilities with heavy noise (IoU ~0.7 at 1/2).
    Refining with the default REFINE / WEAK keys on the image affinities restores most of it."""
    yy, xx = torch.meshgrid(torch.arange(64) + 0.5, torch.arange(64) + 0.5, indexing="ij")
    ellipse = ((xx - 32) / 20) ** 2 + ((yy - 30) / 12) ** 2 <= 1
    g = torch.Generator().manual_seed(0)
    inside, outside = torch.tensor([0.6, 0.4, 0.5]).view(3, 1, 1), torch.tensor([0.4, 0.5, 0.55]).view(3, 1, 1)
    image = torch.where(ellipse, inside, outside)
    image = image + 0.02 * torch.randn(3, 64, 64, generator=g)           # intensities in [0, 1]
    roi = [Boxes(torch.tensor([[6.0, 10.0, 58.0, 50.0]]))]
    cues, _ = image_cues(image[None])
    pooled = pool_cues(cues, roi, (28, 28))
    truth = pool_cues(ellipse[None, None].float(), roi, (28, 28))[0, 0] > 0.5
    cfg = get_defect_cfg()
    refiner = EntropyConstrainedRefiner(cfg)
    aff = pairwise_affinity(pooled[:, :3], refiner.offsets, cfg.MODEL.ROI_MASK_HEAD.WEAK.THETA)
    noisy = (truth.float()[None, None] * 0.8 + 0.1 + 0.35 * torch.randn(1, 1, 28, 28, generator=g)).clamp(0.01, 0.99)

    def iou(p):
        m = p[0, 0] > 0.5
        return ((m & truth).sum() / (m | truth).sum()).item()

    before, after = iou(noisy), iou(refiner(noisy, aff).probs)
    assert before < 0.8 and after > 0.9, (before, after)


def test_bad_values_raise_errors_naming_the_key():
    with pytest.raises(ValueError, match="CONF_THRESH"):
        EntropyConstrainedRefiner(conf_thresh=0.4)
    with pytest.raises(ValueError, match="MARGIN_STEP"):
        EntropyConstrainedRefiner(margin_step=-1.0)
    with pytest.raises(ValueError, match="affinity must be"):
        EntropyConstrainedRefiner()(torch.rand(2, 1, 8, 8), torch.rand(2, 4, 8, 8))
    with pytest.raises(ValueError, match="WEAK.TAU"):
        build_model(_cfg(**{"MODEL.ROI_MASK_HEAD.WEAK.TAU": "1.5"}))
    # Detectron2's own ROI heads do not hand the images to the mask head: a clear error at the first call
    model = build_model(_cfg(**{"MODEL.META_ARCHITECTURE": "GeneralizedRCNN", "MODEL.ROI_HEADS.NAME": "StandardROIHeads",
                                "MODEL.ROI_MASK_HEAD.REFINE.ENABLED": "True"})).train()
    with pytest.raises(ValueError, match="defect_det's ROI heads"), EventStorage(0):
        model(_inputs())


def test_box_supervised_head_trains_and_refines_on_generalized_rcnn():
    """Without TemplateRCNN the heads recover the images from the network input (colour cue only)."""
    torch.manual_seed(0)
    model = build_model(_cfg(**{"MODEL.META_ARCHITECTURE": "GeneralizedRCNN", "MODEL.ROI_MASK_HEAD.REFINE.ENABLED": "True",
                                "MODEL.ROI_MASK_HEAD.WEAK.WARMUP_ITERS": "0"}))
    head = model.roi_heads.mask_head
    seen = []
    original = head.cues

    def spy(images, templates=None, template_valid=None):
        seen.append((images, templates))
        return original(images, templates, template_valid)

    head.cues = spy
    inputs = _inputs(n=1)
    with EventStorage(0):
        losses = model.train()(inputs)
    assert losses["loss_mask_pairwise"] > 0 and "loss_mask_template" in losses
    images, templates = seen[-1]
    assert templates is None
    # the network input, un-normalised: the image's own pixel values
    assert torch.allclose(images[0, :, :96, :128], inputs[0]["image"].float(), atol=1e-3)
    with torch.no_grad():
        out = model.eval()(_inputs(n=1, train=False))
    assert out[0]["instances"].has("pred_masks") or len(out[0]["instances"]) == 0


# ------------------------------------------------------------------------ models
def test_weak_losses_reach_the_mask_head():
    torch.manual_seed(0)
    cfg = _cfg(**{"MODEL.ROI_MASK_HEAD.WEAK.WARMUP_ITERS": "0"})
    model = build_model(cfg).train()
    head = model.roi_heads.mask_head
    for name in ("loss_mask_projection", "loss_mask_pairwise"):
        model.zero_grad()
        with EventStorage(0):
            losses = model(_inputs())
        assert "loss_mask" not in losses and torch.isfinite(losses[name]) and losses[name] > 0, losses
        losses[name].backward()
        assert head.predictor.weight.grad.abs().sum() > 0, name
        assert head.deconv.weight.grad.abs().sum() > 0, name
        assert model.backbone.bottom_up.stem.conv1.weight.grad.abs().sum() > 0, name


def test_without_box_supervision_the_head_trains_on_gt_masks():
    torch.manual_seed(0)
    model = build_model(_cfg(**{"MODEL.ROI_MASK_HEAD.BOX_SUPERVISED": "False"})).train()
    inputs = _inputs()
    for x in inputs:
        masks = torch.zeros(2, 96, 128, dtype=torch.bool)
        masks[0, 10:30, 10:50], masks[1, 30:80, 70:110] = True, True
        x["instances"].gt_masks = BitMasks(masks)
    with EventStorage(0):
        losses = model(inputs)
    assert "loss_mask" in losses and "loss_mask_projection" not in losses and losses["loss_mask"] > 0


def test_pairwise_warmup_ramps_the_loss_in():
    torch.manual_seed(0)
    model = build_model(_cfg(**{"MODEL.ROI_MASK_HEAD.WEAK.WARMUP_ITERS": "100"})).train()
    values = []
    for it in (0, 49, 99, 500):
        torch.manual_seed(0)
        with EventStorage(it):
            values.append(float(model(_inputs())["loss_mask_pairwise"]))
    full = values[-1]
    assert full > 0
    assert values == pytest.approx([full / 100, full / 2, full, full], rel=1e-4)


def test_tr_pre_mask_head_sees_the_image_pixels_not_the_difference():
    model = build_model(_cfg(**{"MODEL.TEMPLATE.MODE": "pre", "MODEL.ROI_MASK_HEAD.REFINE.ENABLED": "True"})).eval()
    head = model.roi_heads.mask_head
    seen = []
    original = head.cues

    def spy(images, templates=None, template_valid=None):
        seen.append((images, templates, template_valid))
        return original(images, templates, template_valid)

    head.cues = spy
    inputs = _inputs(n=1, train=False)
    with torch.no_grad():
        model(inputs)
    images, templates, valid = seen[0]
    assert torch.equal(images[0, :, :96, :128], inputs[0]["image"].float())   # pixel values, not I - T
    assert valid.tolist() == [True]
    assert torch.equal(templates[0, :, :96, :128], inputs[0]["template"].float())


MODES = {
    "none": {},
    "pre": {"MODEL.TEMPLATE.MODE": "pre"},
    "inter": {"MODEL.TEMPLATE.MODE": "inter"},
    "ptg": {"MODEL.TEMPLATE.MODE": "ptg"},
    "post": {"MODEL.TEMPLATE.POST": "True"},
    "sinkhorn": {"MODEL.ROI_HEADS.NMS_TYPE": "sinkhorn"},
    "cascade+cr+post+sinkhorn": {"MODEL.ROI_HEADS.NAME": "RDDNCascadeROIHeads",
                                 "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG": "True",
                                 "MODEL.ROI_BOX_HEAD.CONTEXT_SCALE": "1.5", "MODEL.TEMPLATE.POST": "True",
                                 "MODEL.ROI_HEADS.NMS_TYPE": "sinkhorn"},
}


@pytest.mark.parametrize("mode", list(MODES))
def test_every_mode_trains_box_supervised_and_predicts_refined_masks(mode):
    torch.manual_seed(0)
    cfg = _cfg(**{"MODEL.ROI_MASK_HEAD.REFINE.ENABLED": "True", "MODEL.ROI_HEADS.SCORE_THRESH_TEST": "0.0",
                  "TEST.DETECTIONS_PER_IMAGE": "20", **MODES[mode]})
    model = build_model(cfg).train()
    with EventStorage(0):
        losses = model(_inputs(normal=1))          # a defect-free image (no GT box) in the batch too
    assert {"loss_mask_projection", "loss_mask_pairwise"} <= set(losses) and "loss_mask" not in losses
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    model.eval()
    calls = []
    model.roi_heads.mask_head.refiner.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    inputs = _inputs(train=False)
    with torch.no_grad():
        raw = model.inference(inputs, do_postprocess=False)
        out = model(inputs)
    for r, o in zip(raw, out):
        n = len(r)
        assert n > 0 and r.pred_masks.shape == (n, 1, 28, 28)
        assert ((r.pred_masks >= 0) & (r.pred_masks <= 1)).all()
        assert o["instances"].pred_masks.shape == (n, 96, 128)            # pasted into the image
    assert calls and calls[0] == sum(len(r) for r in raw)                 # every detection refined


def test_box_supervised_training_without_any_segmentation(tiny_fabric, tmp_path):
    """MASK_ON + BOX_SUPERVISED on dataset dicts that carry no 'segmentation' at all."""
    source = tiny_fabric["names"]["train"]
    name = "tiny_fabric_train_boxes_only"
    if name not in DatasetCatalog.list():
        def boxes_only():
            dicts = copy.deepcopy(DatasetCatalog.get(source))
            for d in dicts:
                for a in d.get("annotations", []):
                    a.pop("segmentation", None)
            return dicts
        DatasetCatalog.register(name, boxes_only)
        MetadataCatalog.get(name).set(thing_classes=MetadataCatalog.get(source).thing_classes)
    assert not any("segmentation" in a for d in DatasetCatalog.get(name) for a in d.get("annotations", []))
    torch.manual_seed(0)
    cfg = tiny_cfg(tiny_fabric["names"], tmp_path, **{
        "MODEL.META_ARCHITECTURE": "TemplateRCNN", "MODEL.ROI_HEADS.NAME": "RDDNStandardROIHeads",
        "MODEL.ROI_BOX_HEAD.CONTEXT_SCALE": "1.0", **WEAK, "MODEL.ROI_MASK_HEAD.WEAK.WARMUP_ITERS": "2",
        "SOLVER.MAX_ITER": "3", "DATASETS.TEST": "()"})
    cfg.DATASETS.TRAIN = (name,)
    mapper = build_defect_mapper(cfg, True, [name])
    mapped = [mapper(d) for d in DatasetCatalog.get(name) if d.get("annotations")][:2]
    assert all(not x["instances"].has("gt_masks") and len(x["instances"]) > 0 for x in mapped)
    # MODE none: the templates still load, for the mask head's image - template cue
    assert cfg.MODEL.TEMPLATE.MODE == "none" and all(x.get("template") is not None for x in mapped)
    assert template_usage(cfg, True)[0] == "optional" and template_usage(cfg, False)[0] == "unused"
    refine = cfg.clone()
    refine.MODEL.ROI_MASK_HEAD.REFINE.ENABLED = True     # at inference only the refinement reads them
    assert template_usage(refine, False)[0] == "optional"
    off = cfg.clone()
    off.MODEL.ROI_MASK_HEAD.WEAK.USE_TEMPLATE = False
    assert template_usage(off, True)[0] == "unused"
    trainer = DefectTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    latest = trainer.storage.latest()
    for key in ("loss_mask_projection", "loss_mask_pairwise", "total_loss"):
        value, iteration = latest[key]
        assert math.isfinite(value) and iteration == 2, (key, latest[key])
    assert latest["loss_mask_projection"][0] > 0


# ------------------------------------------------------------------------ benchmark
def test_benchmark_prints_the_table():
    from defect_det.weak_mask import benchmark as bench

    out = io.StringIO()
    res = bench.main(["--size", "64", "96", "--detections", "3", "--iters", "1", "--warmup", "0"], out=out)
    text = out.getvalue()
    assert text.startswith("command: python tools/benchmark_weak_mask.py --size 64 96")
    assert "1 torch threads" in text
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["variant", "ms / image (median)", "ratio to mask head"]
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["mask head", "refinement", "mask head + refinement"]
    rows = res["rows"]
    assert rows[0]["ratio"] == 1.0 and all(r["ms_per_image"] > 0 for r in rows)
    assert rows[2]["ratio"] == pytest.approx(rows[2]["ms_per_image"] / rows[0]["ms_per_image"])


# ------------------------------------------------------------------------ lower bound + table script
def test_filled_box_head_pastes_every_detection_as_its_box():
    torch.manual_seed(0)
    cfg = _cfg(**{"MODEL.ROI_MASK_HEAD.NAME": "FilledBoxMaskHead", "MODEL.ROI_HEADS.SCORE_THRESH_TEST": "0.0",
                  "TEST.DETECTIONS_PER_IMAGE": "10"})
    model = build_model(cfg)
    assert sum(p.numel() for p in model.roi_heads.mask_head.parameters()) == 0
    with EventStorage(0):
        losses = model.train()(_inputs())
    assert float(losses["loss_mask"]) == 0.0
    model.eval()
    with torch.no_grad():
        out = model(_inputs(train=False))
    for o in out:
        inst = o["instances"]
        assert len(inst) > 0
        for box, mask in zip(inst.pred_boxes.tensor, inst.pred_masks):
            x0, y0, x1, y1 = box.tolist()
            ys, xs = torch.nonzero(mask, as_tuple=True)
            if len(xs) == 0:  # a box thinner than a pixel pastes nothing
                assert min(x1 - x0, y1 - y0) < 1.5
                continue
            # the pasted mask is the box, to the pixel (paste_masks_in_image rounds the borders)
            assert abs(xs.min().item() - x0) <= 1 and abs(xs.max().item() + 1 - x1) <= 1
            assert abs(ys.min().item() - y0) <= 1 and abs(ys.max().item() + 1 - y1) <= 1
            # filled: everything but the bilinear corners of the border row/column
            assert mask[ys.min() + 1:ys.max(), xs.min() + 1:xs.max()].all()


def test_template_difference_loss_targets_the_cells_that_differ_from_the_template():
    m = 28
    inside = torch.zeros(2, m, m, dtype=torch.bool)
    inside[:, 4:24, 4:24] = True                       # the box B
    diff = torch.zeros(2, m, m)
    diff[0, 10:14, 6:22] = 0.5                          # ROI 0: a bar that differs from the template
    diff[0, 4:24, 4:24] += 0.01                         # + noise floor (below 0.4 * peak)
    diff[1, 4:24, 4:24] = 0.02                          # ROI 1: no visible difference (< min_diff)
    bar = torch.zeros(m, m)
    bar[10:14, 6:22] = 1
    good = (bar * 60 - 30).expand(2, m, m).clone()      # confident mask = the bar
    filled = (inside.float() * 60 - 30)                 # the filled box
    kw = dict(thresh=0.4, min_diff=0.05)
    assert template_difference_loss(good, diff, inside, **kw) < 1e-6
    assert template_difference_loss(filled, diff, inside, **kw) > 5.0
    # ROI 1 is left out: changing its logits changes nothing
    other = good.clone()
    other[1] = -other[1]
    assert torch.equal(template_difference_loss(other, diff, inside, **kw),
                       template_difference_loss(good, diff, inside, **kw))
    # cells outside the box never count; no usable ROI -> 0 with a graph
    x = torch.zeros(2, m, m, requires_grad=True)
    loss = template_difference_loss(x, diff * 0.01, inside, **kw)
    assert float(loss) == 0.0 and loss.requires_grad
    loss = template_difference_loss(x, diff, inside, **kw)
    loss.backward()
    g = x.grad[0]
    assert (g[~inside[0]] == 0).all() and (g[10:14, 6:22] < 0).all() and (g[16:24, 4:24] > 0).all()


def test_template_difference_loss_in_the_head_needs_a_template():
    torch.manual_seed(0)
    model = build_model(_cfg(**{"MODEL.META_ARCHITECTURE": "TemplateRCNN"}))
    assert model.roi_heads.mask_head.template_weight == 1.0
    inputs = _inputs()
    with EventStorage(0):
        losses = model.train()(inputs)
    assert "loss_mask_template" in losses and torch.isfinite(losses["loss_mask_template"])
    off = build_model(_cfg(**{"MODEL.ROI_MASK_HEAD.WEAK.USE_TEMPLATE": "False"}))
    assert off.roi_heads.mask_head.template_weight == 0.0
    with EventStorage(0):
        assert "loss_mask_template" not in off.train()(_inputs())
    with pytest.raises(ValueError, match="TEMPLATE_THRESH"):
        build_model(_cfg(**{"MODEL.ROI_MASK_HEAD.WEAK.TEMPLATE_THRESH": "0.0"}))
