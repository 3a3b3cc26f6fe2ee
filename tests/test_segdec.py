"""SegDecNet: model mechanisms, mapper, sampler, evaluator, synthetic DAGM and a training smoke run.
Everything tiny (<= 64 px images, a few iterations)."""
import glob
import os

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

import defect_det  # noqa: F401
from defect_det.config import get_defect_cfg
from defect_det.modeling.meta_arch.segdec import SegDecNet

from conftest import REPO


def tiny_model_cfg(**segdec):
    cfg = get_defect_cfg()
    cfg.MODEL.META_ARCHITECTURE = "SegDecNet"
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.PIXEL_MEAN = [0.0]
    cfg.MODEL.PIXEL_STD = [255.0]
    cfg.MODEL.SEGDEC.WIDTH = 0.125
    cfg.MODEL.SEGDEC.INPUT_SIZE = (64, 64)
    cfg.SOLVER.MAX_ITER = 10
    for k, v in segdec.items():
        cfg.MODEL.SEGDEC[k] = v
    return cfg


def _inputs(n=2, size=64, weak=False):
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        mask = torch.zeros(size, size, dtype=torch.uint8)
        label = i % 2
        if label:
            mask[20:40, 24:36] = 1
        d = {"image": torch.rand(1, size, size, generator=g) * 255, "label": label, "sem_seg": mask}
        if weak and label:
            d["use_pixel_labels"] = False
        out.append(d)
    return out


def _seg_grads(model):
    return [p.grad for p in model.segmentation.parameters()]


@pytest.mark.parametrize("adjust", [True, False])
def test_gradient_flow_adjustment(adjust):
    """The decision head's loss reaches the segmentation subnet iff the adjustment is off."""
    torch.manual_seed(0)
    model = build_model(tiny_model_cfg(GRADIENT_ADJUSTMENT=adjust))
    model.train()
    with EventStorage(5):
        losses = model(_inputs())
    losses["loss_cls"].backward()
    grads = _seg_grads(model)
    total = sum(float(g.abs().sum()) for g in grads if g is not None)
    if adjust:
        assert total == 0.0
    else:
        assert total > 0.0
    # the decision subnet itself always learns
    assert sum(float(p.grad.abs().sum()) for p in model.decision.parameters()) > 0


def test_dynamic_balancing_ramps_cls_weight():
    torch.manual_seed(0)
    model = build_model(tiny_model_cfg(DELTA=0.5))
    model.train()
    inputs = _inputs()
    with EventStorage(0):
        first = model(inputs)
    with EventStorage(5):
        mid = model(inputs)
    assert float(first["loss_cls"]) == 0.0 and float(first["loss_seg"]) > 0
    # at e/E = 0.5: loss_seg = 0.5 L_seg, loss_cls = 0.5 * 0.5 L_cls; recompute L_* unweighted
    model.dyn_balanced_loss = False
    with EventStorage(5):
        plain = model(inputs)
    assert torch.allclose(mid["loss_seg"], 0.5 * plain["loss_seg"])
    assert torch.allclose(mid["loss_cls"], 0.5 * plain["loss_cls"])  # plain = DELTA * L_cls


def test_weak_positive_contributes_only_cls():
    torch.manual_seed(0)
    model = build_model(tiny_model_cfg(DYN_BALANCED_LOSS=False))
    model.train()
    inputs = _inputs(n=2, weak=True)  # input 1 is a weakly labelled positive
    with EventStorage(0):
        mixed = model(inputs)
        only_neg = model([inputs[0]])
    # L_seg is the mean over the pixels of the pixel-labelled images only: the negative alone
    assert torch.allclose(mixed["loss_seg"], only_neg["loss_seg"])
    with EventStorage(0):
        all_weak = model([inputs[1]])
    assert float(all_weak["loss_seg"]) == 0.0 and float(all_weak["loss_cls"]) > 0


def test_inference_outputs():
    model = build_model(tiny_model_cfg())
    model.eval()
    with torch.no_grad():
        out = model([{"image": torch.zeros(1, 64, 64), "height": 100, "width": 80},
                     {"image": torch.zeros(1, 64, 64)}])
    assert out[0]["sem_seg"].shape == (1, 100, 80) and out[1]["sem_seg"].shape == (1, 64, 64)
    for o in out:
        assert o["score"].dim() == 0 and 0.0 <= float(o["score"]) <= 1.0
        assert float(o["sem_seg"].min()) >= 0.0 and float(o["sem_seg"].max()) <= 1.0


def test_bad_inputs_raise():
    model = build_model(tiny_model_cfg())
    model.eval()
    with pytest.raises(ValueError, match="IN_CHANNELS"):
        model([{"image": torch.zeros(3, 64, 64)}])
    with pytest.raises(ValueError, match="multiple of 8"):
        model([{"image": torch.zeros(1, 60, 64)}])
    cfg = tiny_model_cfg()
    cfg.MODEL.PIXEL_MEAN = [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="PIXEL_MEAN"):
        build_model(cfg)


def test_width_scales_channels():
    full = SegDecNet(in_channels=1, width=1.0)
    assert full.segmentation.out_channels == 1024
    assert full.decision.fc.in_features == 66
    small = SegDecNet(in_channels=1, width=0.125)
    assert small.segmentation.out_channels == 128 and small.decision.fc.in_features == 2 * 4 + 2


def test_channel_norm_matches_groupnorm_and_handles_1x1():
    from defect_det.modeling.meta_arch.segdec import ChannelNorm

    torch.manual_seed(0)
    x = torch.randn(2, 4, 5, 6)
    ours, ref = ChannelNorm(4), torch.nn.GroupNorm(4, 4, eps=1e-3)
    with torch.no_grad():
        ours.weight.copy_(torch.randn(4)); ours.bias.copy_(torch.randn(4))
        ref.weight.copy_(ours.weight); ref.bias.copy_(ours.bias)
    assert torch.allclose(ours(x), ref(x), atol=1e-5)
    one = ours(torch.randn(1, 4, 1, 1))
    assert torch.allclose(one.flatten(), ours.bias)


# ------------------------------------------------------------------------------------------- sampler
def _neg_counts(labels, epochs_list):
    neg = [i for i, y in enumerate(labels) if y == 0]
    counts = np.zeros(len(labels), int)
    history = []
    for ep in epochs_list:
        np.add.at(counts, ep, 1)
        history.append(counts[neg].copy())
    return history


@pytest.mark.parametrize("n_pos,n_neg", [(3, 10), (5, 37), (7, 7), (4, 2)])
def test_frequency_of_use_counts_differ_by_at_most_one(n_pos, n_neg):
    from defect_det.data.samplers import FrequencyOfUseSampler

    labels = [1] * n_pos + [0] * n_neg
    sampler = FrequencyOfUseSampler(labels, seed=0)  # mode "balanced"
    epochs = list(__import__("itertools").islice(sampler.epochs(), 15))
    for ep in epochs:
        assert sorted(i for i in ep if labels[i]) == list(range(n_pos))  # every positive once
        assert len(ep) == n_pos + min(n_pos, n_neg) and len(set(ep)) == len(ep)
    for counts in _neg_counts(labels, epochs):
        assert counts.max() - counts.min() <= 1, counts


def test_paper_mode_balances_better_than_uniform():
    """The authors' soft probabilities: spread 0/1 after the first epoch, and over 15 epochs far
    below uniform draws of the same sizes (which is what makes the balanced test above non-trivial)."""
    import itertools

    from defect_det.data.samplers import FrequencyOfUseSampler

    labels = [1] * 3 + [0] * 10
    paper, uniform = [], []
    for seed in range(10):
        eps = list(itertools.islice(FrequencyOfUseSampler(labels, seed=seed, mode="paper").epochs(), 15))
        hist = _neg_counts(labels, eps)
        assert hist[0].max() - hist[0].min() <= 1
        paper.append(max(c.max() - c.min() for c in hist))
        rng = np.random.default_rng(seed)
        eps = [list(range(3)) + (3 + rng.choice(10, 3, replace=False)).tolist() for _ in range(15)]
        uniform.append(max(c.max() - c.min() for c in _neg_counts(labels, eps)))
    assert max(uniform) > 1 and np.mean(paper) < np.mean(uniform) and max(paper) <= 3


def test_frequency_of_use_sampler_is_infinite_and_sharded(monkeypatch):
    import itertools

    from detectron2.utils import comm

    from defect_det.data.samplers import FrequencyOfUseSampler, frequency_of_use_probabilities

    labels = [1, 0, 0, 1, 0, 0, 0]
    full = list(itertools.islice(iter(FrequencyOfUseSampler(labels, seed=3)), 40))
    assert len(full) == 40 and set(full) <= set(range(7))
    monkeypatch.setattr(comm, "get_world_size", lambda: 2)
    shards = []
    for r in range(2):
        monkeypatch.setattr(comm, "get_rank", lambda r=r: r)
        shards.append(list(itertools.islice(iter(FrequencyOfUseSampler(labels, seed=3)), 20)))
    assert shards[0] == full[0::2] and shards[1] == full[1::2]
    p = frequency_of_use_probabilities(np.array([2, 1, 1, 2]))
    # 1 - c/max = [0, .5, .5, 0], minus median .25 plus 1 = [.75, 1.25, 1.25, .75], ** (4 ln 4)
    assert np.isclose(p.sum(), 1) and np.isclose(p[1] / p[0], (1.25 / 0.75) ** (4 * np.log(4)))
    assert np.allclose(frequency_of_use_probabilities(np.array([3, 3, 3])), 1 / 3)
    with pytest.raises(ValueError, match="index 1 has 2"):
        FrequencyOfUseSampler([0, 2], seed=0)
    with pytest.raises(ValueError, match="dict 0 .* has none"):
        FrequencyOfUseSampler.from_dataset_dicts([{"file_name": "a.png"}], seed=0)
