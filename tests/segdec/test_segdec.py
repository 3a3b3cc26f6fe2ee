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
from defect_det.segdec.model import SegDecNet

from conftest import REPO, TINY_DAGM, tiny_segdec_cfg


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


def test_channel_norm_instance_mode_matches_groupnorm_and_handles_1x1():
    from defect_det.segdec.model import ChannelNorm

    torch.manual_seed(0)
    x = torch.randn(2, 4, 5, 6)
    ours, ref = ChannelNorm(4, mode="instance"), torch.nn.GroupNorm(4, 4, eps=1e-3)
    with torch.no_grad():
        ours.weight.copy_(torch.randn(4)); ours.bias.copy_(torch.randn(4))
        ref.weight.copy_(ours.weight); ref.bias.copy_(ours.bias)
    assert torch.allclose(ours(x), ref(x), atol=1e-5)
    one = ours(torch.randn(1, 4, 1, 1))
    assert torch.allclose(one.flatten(), ours.bias)


def test_channel_norm_authors_mode_divides_by_the_root_of_the_std():
    """The authors' FeatureNorm: scale * (x - mean) / sqrt(std_unbiased + eps) + bias (not sqrt(var + eps))."""
    from defect_det.segdec.model import ChannelNorm

    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 5) * 3.0 + 1.0
    norm = ChannelNorm(3, mode="authors")
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([0.5, 1.0, 2.0])); norm.bias.copy_(torch.tensor([0.0, 1.0, -1.0]))
    flat = x.flatten(2)
    mean, std = flat.mean(-1), flat.std(-1, unbiased=True)
    expected = (x - mean[..., None, None]) / (std[..., None, None] + 1e-3).sqrt()
    expected = expected * norm.weight.view(1, -1, 1, 1) + norm.bias.view(1, -1, 1, 1)
    assert torch.allclose(norm(x), expected, atol=1e-5)
    instance = ChannelNorm(3, mode="instance")
    with torch.no_grad():
        instance.weight.copy_(norm.weight); instance.bias.copy_(norm.bias)
    assert (norm(x) - instance(x)).abs().max() > 0.1          # the two formulas differ at std != 1
    assert torch.isfinite(norm(torch.randn(1, 3, 1, 1))).all()  # a 1 x 1 map: std 0, output = bias
    no_bias = ChannelNorm(1, bias=False)
    assert no_bias.bias is None and [n for n, _ in no_bias.named_parameters()] == ["weight"]


def test_segdec_defaults_follow_the_authors_code():
    from defect_det.segdec.model import ChannelNorm

    net = SegDecNet(in_channels=1, width=0.125)
    norms = [m for m in net.modules() if isinstance(m, ChannelNorm)]
    assert norms and all(m.mode == "authors" for m in norms)
    assert net.segmentation.seg_logits_norm is not None and net.segmentation.seg_logits_norm.bias is None
    # Xavier-normal: std of a conv weight ~ sqrt(2 / (fan_in + fan_out))
    w = net.segmentation.volume[2].weight  # 5x5, 4 -> 8 channels
    fan_in, fan_out = w.shape[1] * 25, w.shape[0] * 25
    assert abs(float(w.std()) / (2.0 / (fan_in + fan_out)) ** 0.5 - 1.0) < 0.2
    ours = SegDecNet(in_channels=1, width=0.125, norm="instance", seg_logit_norm=False, init="torch")
    assert ours.segmentation.seg_logits_norm is None
    assert "segmentation.seg_logits_norm.weight" not in ours.state_dict()


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
    from defect_det.segdec.sampler import FrequencyOfUseSampler

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

    from defect_det.segdec.sampler import FrequencyOfUseSampler

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

    from defect_det.segdec.sampler import FrequencyOfUseSampler, frequency_of_use_probabilities

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


# ---------------------------------------------------------------------------------- synthetic DAGM
def test_synthetic_dagm_layout_and_loader(tiny_dagm):
    import cv2

    from defect_det.data.datasets.surface import load_dagm

    for cls in (1, 2):
        train = load_dagm(os.path.join(tiny_dagm, f"Class{cls}"), "Train")
        exact = load_dagm(os.path.join(tiny_dagm, f"Class{cls}"), "Train", use_exact_masks=True)
        assert len(train) == 8 and sum(d["label"] for d in train) == round(0.4 * 8)
        assert len(load_dagm(os.path.join(tiny_dagm, f"Class{cls}"), "Test")) == 6
        for d, e in zip(train, exact):
            assert d["file_name"].endswith(".PNG") and (d["height"], d["width"]) == (64, 64)
            if d["label"]:
                weak = cv2.imread(d["sem_seg_file_name"], cv2.IMREAD_GRAYSCALE)
                mask = cv2.imread(e["sem_seg_file_name"], cv2.IMREAD_GRAYSCALE)
                assert set(np.unique(weak)) <= {0, 255} and mask.any()
                assert (weak[mask > 0] == 255).all() and (weak > 0).sum() > (mask > 0).sum()
                # the defect really changed the image: its pixels differ from a defect-free render
                img = cv2.imread(d["file_name"], cv2.IMREAD_GRAYSCALE)
                assert img.std() > 3


def test_synthetic_dagm_deterministic(tiny_dagm, tmp_path):
    import hashlib

    from defect_det.data.synthetic.dagm import SyntheticDAGMConfig, generate_dagm_dataset

    def digest(root):
        h = hashlib.sha256()
        for f in sorted(glob.glob(os.path.join(root, "Class1", "**", "*"), recursive=True)):
            if os.path.isfile(f):
                h.update(os.path.relpath(f, root).encode()); h.update(open(f, "rb").read())
        return h.hexdigest()

    generate_dagm_dataset(str(tmp_path / "a"), SyntheticDAGMConfig(**TINY_DAGM))
    generate_dagm_dataset(str(tmp_path / "b"), SyntheticDAGMConfig(**{**TINY_DAGM, "seed": 1}))
    assert digest(str(tmp_path / "a")) == digest(tiny_dagm) != digest(str(tmp_path / "b"))


@pytest.mark.parametrize("field,value", [("size", 60), ("classes", (0,)), ("train_images", 1),
                                         ("defect_fraction", 1.0), ("seed", -1)])
def test_synthetic_dagm_config_errors(field, value):
    from defect_det.data.synthetic.dagm import SyntheticDAGMConfig

    with pytest.raises(ValueError, match=f"SyntheticDAGMConfig.{field}"):
        SyntheticDAGMConfig(**{field: value}).validate()


# --------------------------------------------------------------------------------------- evaluators
def test_image_level_metrics_toy_case():
    from defect_det.evaluation.image_level import auroc, average_precision, image_level_metrics

    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3])
    labels = np.array([1, 0, 1, 1, 0, 0, 0])
    # ranked: + - + + - - -: precision at the positives 1/1, 2/3, 3/4
    assert np.isclose(average_precision(scores, labels), (1 + 2 / 3 + 3 / 4) / 3)
    # pairs (pos > neg): 0.9 beats 4, 0.7 and 0.6 beat 3 each -> 10 / 12
    assert np.isclose(auroc(scores, labels), 10 / 12)
    m = image_level_metrics(scores, labels)
    assert np.isclose(m["detection_rate"], 1 / 3)  # only 0.9 is above the top normal score 0.8
    # thresholds: 0.9 (F1 .5), 0.8 (.4), 0.7 (.667), 0.6 (F1 = 2*.75*1/1.75 = .857) -> best at 0.6
    assert np.isclose(m["best_F1"], 6 / 7) and m["threshold"] == 0.6 and m["FP"] == 1 and m["FN"] == 0
    assert m["FP_at_no_FN"] == 1
    # ties: two equal scores, one of each class -> half a pair
    assert np.isclose(auroc([0.5, 0.5], [1, 0]), 0.5)
    assert np.isclose(average_precision([0.5, 0.5, 0.1], [1, 0, 0]), 0.5)


def test_metrics_match_sklearn():
    sk = pytest.importorskip("sklearn.metrics")
    from defect_det.evaluation.image_level import auroc, average_precision

    rng = np.random.default_rng(0)
    for _ in range(10):
        labels = rng.integers(0, 2, 50)
        scores = np.round(rng.random(50) + labels * 0.3, 1)  # with ties
        assert np.isclose(average_precision(scores, labels), sk.average_precision_score(labels, scores))
        assert np.isclose(auroc(scores, labels), sk.roc_auc_score(labels, scores))


def test_segdec_evaluator_pixel_and_pr_curve(tmp_path):
    from defect_det.evaluation import build_defect_evaluator

    cfg = tiny_model_cfg()
    cfg.TEST.EVALUATOR = "SegDecEvaluator"
    ev = build_defect_evaluator(cfg, "toy", output_dir=str(tmp_path), distributed=False)
    ev.reset()
    gt = torch.zeros(8, 8, dtype=torch.uint8)
    gt[0:4, 0:4] = 1  # 16 pixels
    pred = torch.zeros(1, 8, 8)
    pred[0, 0:4, 0:2] = 0.9  # 8 TP
    pred[0, 6:8, 6:8] = 0.6  # 4 FP  -> FN 8
    ev.process([{"label": 1, "sem_seg": gt}, {"label": 0}],
               [{"score": torch.tensor(0.8), "sem_seg": pred}, {"score": torch.tensor(0.3), "sem_seg": pred}])
    res = ev.evaluate()
    assert np.isclose(res["pixel"]["Dice"], 16 / (16 + 4 + 8)) and np.isclose(res["pixel"]["IoU"], 8 / 20)
    assert res["image"]["AP"] == 1.0 and res["image"]["detection_rate"] == 1.0
    assert os.path.getsize(os.path.join(str(tmp_path), "pr_curve.png")) > 1000


# ------------------------------------------------------------------------------ configs and training
SEGDEC_CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "SegDecNet", "*.yaml")))


@pytest.mark.parametrize("path", [p for p in SEGDEC_CONFIGS if "Base-" not in p],
                         ids=lambda p: os.path.basename(p))
def test_build_every_segdec_config(path):
    cfg = get_defect_cfg()
    cfg.merge_from_file(path)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.SEGDEC.WIDTH = min(cfg.MODEL.SEGDEC.WIDTH, 0.125)  # keep the test small
    model = build_model(cfg)
    assert isinstance(model, SegDecNet)
    assert cfg.DATALOADER.SAMPLER_TRAIN == "FrequencyOfUseSampler" and cfg.TEST.EVALUATOR == "SegDecEvaluator"
    h, w = cfg.MODEL.SEGDEC.INPUT_SIZE
    assert h % 8 == 0 and w % 8 == 0
    model.eval()
    with torch.no_grad():
        out = model([{"image": torch.zeros(cfg.MODEL.SEGDEC.IN_CHANNELS, 64, 96), "height": 64, "width": 96}])
    assert out[0]["sem_seg"].shape == (1, 64, 96)


def test_train_smoke_through_defect_trainer(tiny_dagm, tmp_path):
    from defect_det.segdec.sampler import FrequencyOfUseSampler
    from defect_det.engine import DefectTrainer

    cfg = tiny_segdec_cfg(tiny_dagm, tmp_path, "MODEL.SEGDEC.NUM_SEGMENTED", "1", "SOLVER.MAX_ITER", "3",
                          "SOLVER.IMS_PER_BATCH", "2")
    trainer = DefectTrainer(cfg)
    assert isinstance(trainer.data_loader.dataset.sampler, FrequencyOfUseSampler)
    trainer.resume_or_load(resume=False)
    results = trainer.train()
    assert trainer.iter == 3 and len(trainer.storage.history("loss_cls").values()) == 3
    image, pixel = results["image"], results["pixel"]
    assert image["num_images"] == 6 and image["num_defective"] == round(0.4 * 6)
    assert 0.0 <= image["AP"] <= 1.0 and 0.0 <= image["AUROC"] <= 1.0 and 0.0 <= pixel["Dice"] <= 1.0
    assert os.path.isfile(os.path.join(str(tmp_path), "inference", "tiny_sdagm_test", "pr_curve.png"))


@pytest.mark.slow
def test_segdec_table_script_runs_rows_in_parallel(tmp_path):
    """tools/segdec_table.py end to end on a tiny set: two rows at once, table rows and values; the
    row 'nall' is the same training as 'full' and reuses its results."""
    import json
    import subprocess
    import sys

    out = tmp_path / "table"
    cmd = [sys.executable, os.path.join(REPO, "tools", "segdec_table.py"), "--out", str(out),
           "--rows", "full", "no_fos", "nall", "--classes", "1", "--size", "64", "--train-images", "16",
           "--test-images", "8", "--iters", "4", "--jobs", "2"]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    table = (out / "table.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and "row" not in line]
    assert [line.split("|")[1].strip() for line in rows] == [
        "full (all extensions)", "- frequency-of-use sampling", "mixed N=all (= full)"]
    assert rows[2].split("|")[2:] == rows[0].split("|")[2:]
    assert not (out / "nall").exists()
    for line in rows:
        cells = line.strip("|").split("|")
        values = [float(c) for c in cells[1:]]
        assert len(values) == 8 and all(0.0 <= v <= 1.0 for v in values)
        assert values[6] == values[0] and values[7] == values[1]  # one class: its AP (TTA) is the mean
    for key in ("full", "no_fos"):
        assert (out / key / "class1" / "seed0" / "results.json").is_file()
        record = json.loads((out / "results" / f"{key}_c1_s0.json").read_text())  # results as data
        assert record["row"] == key and record["class"] == 1 and record["seed"] == 0 and record["iters"] == 4
        assert record["metrics"] == json.loads((out / key / "class1" / "seed0" / "results.json").read_text())
        assert "tools/train_net.py" in record["command"] and record["net"] == "previous"
    # a row saved without the _TTA results (trained before TTA existed) is evaluated again from its
    # model_final.pth, not retrained; its plain results come out the same

    saved = out / "full" / "class1" / "seed0" / "results.json"
    results = json.loads(saved.read_text())
    saved.write_text(json.dumps({k: v for k, v in results.items() if not k.endswith("_TTA")}))
    cmd = [sys.executable, os.path.join(REPO, "tools", "segdec_table.py"), "--out", str(out),
           "--rows", "full", "--classes", "1", "--size", "64", "--train-images", "16",
           "--test-images", "8", "--iters", "4"]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "full class 1 seed 0: evaluated" in r.stdout
    again = json.loads(saved.read_text())
    assert set(again) == set(results) and again == results
