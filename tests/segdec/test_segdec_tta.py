"""SegDecNet test-time augmentation: transform sets, exact inversion, invariance of the averaged
output under the augmentation group, and the TEST.AUG.ENABLED path of DefectTrainer / train_net."""
import os

import pytest
import torch
from detectron2.modeling import build_model

from defect_det.segdec.tta import (
    SegDecNetWithTTA, apply_transform, flip_transforms, invert_transform)

from conftest import REPO, register_tiny_dagm
from test_segdec import tiny_model_cfg


@pytest.mark.parametrize("kind,n", [("horizontal", 2), ("vertical", 2), ("both", 4), ("dihedral", 8)])
def test_flip_transforms(kind, n):
    ts = flip_transforms(kind)
    assert len(ts) == n and len(set(ts)) == n and ts[0] == (False, False, False)
    x = torch.arange(2 * 3 * 16 * 24, dtype=torch.float32).view(2, 3, 16, 24)  # not square
    images = set()
    for t in ts:
        y = apply_transform(x, t)
        assert y.shape == ((2, 3, 24, 16) if t[2] else (2, 3, 16, 24))
        assert torch.equal(invert_transform(y, t), x)
        images.add(tuple(y.flatten().tolist()))
    assert len(images) == n  # every transform moves the pixels differently


def test_flip_transforms_bad_kind():
    with pytest.raises(ValueError, match="TEST_AUG_FLIP.*'none'"):
        flip_transforms("none")


def _model():
    torch.manual_seed(0)
    model = build_model(tiny_model_cfg())
    model.eval()
    return model


def test_identity_tta_equals_model():
    model = _model()
    inputs = [{"image": torch.rand(1, 64, 80) * 255, "height": 70, "width": 50}]
    with torch.no_grad():
        plain = model(inputs)[0]
    for reduce in ("logit", "prob"):
        out = SegDecNetWithTTA(model, [(False, False, False)], reduce)(inputs)[0]
        assert torch.allclose(out["score"], plain["score"], atol=1e-6)
        assert torch.allclose(out["sem_seg"], plain["sem_seg"], atol=1e-6)
        assert out["sem_seg"].shape == (1, 70, 50)


@pytest.mark.parametrize("reduce", ["logit", "prob"])
def test_dihedral_tta_is_invariant(reduce):
    """Averaged over the whole group, the score of a transformed image equals the original's and its
    map is the transformed map: fails if any inverse mapped a map back wrongly."""
    model = _model()
    tta = SegDecNetWithTTA(model, flip_transforms("dihedral"), reduce)
    x = torch.rand(1, 64, 64, generator=torch.Generator().manual_seed(1)) * 255
    ref = tta([{"image": x}])[0]
    plain = model([{"image": x}])[0]
    assert not torch.allclose(ref["sem_seg"], plain["sem_seg"], atol=1e-4)  # TTA changes the output
    for t in flip_transforms("dihedral")[1:]:
        out = tta([{"image": apply_transform(x, t)}])[0]
        assert torch.allclose(out["score"], ref["score"], atol=1e-5)
        assert torch.allclose(out["sem_seg"], apply_transform(ref["sem_seg"], t), atol=1e-5)


def test_tta_wrapper_errors():
    model = _model()
    with pytest.raises(TypeError, match="SegDecNet"):
        SegDecNetWithTTA(torch.nn.Linear(1, 1), flip_transforms("both"))
    with pytest.raises(ValueError, match="TEST_AUG_REDUCE"):
        SegDecNetWithTTA(model, flip_transforms("both"), "mean")
    tta = SegDecNetWithTTA(model, flip_transforms("both"))
    tta.train()
    with pytest.raises(RuntimeError, match="inference"):
        tta([{"image": torch.zeros(1, 64, 64)}])


def test_from_config_follows_flip():
    model = _model()
    cfg = tiny_model_cfg(FLIP="vertical")
    assert SegDecNetWithTTA.from_config(cfg, model).transforms == flip_transforms("vertical")
    cfg.MODEL.SEGDEC.TEST_AUG_FLIP = "dihedral"
    assert len(SegDecNetWithTTA.from_config(cfg, model).transforms) == 8


def test_train_net_evaluates_with_tta(tiny_dagm, tmp_path):
    """train_net's main with TEST.AUG.ENABLED: plain and _TTA results of the test set."""
    from defect_det.engine import train_net

    register_tiny_dagm(tiny_dagm)
    out = tmp_path / "results.json"
    args = train_net.get_parser().parse_args([
        "--config-file", os.path.join(REPO, "configs", "SegDecNet", "synthetic_dagm_cpu.yaml"),
        "--save-results", str(out),
        "DATASETS.TRAIN", "('tiny_sdagm_train',)", "DATASETS.TEST", "('tiny_sdagm_test',)",
        "MODEL.SEGDEC.INPUT_SIZE", "(64, 64)", "MODEL.SEGDEC.WIDTH", "0.125", "SOLVER.MAX_ITER", "2",
        "DATALOADER.NUM_WORKERS", "0", "OUTPUT_DIR", str(tmp_path), "TEST.AUG.ENABLED", "True",
    ])
    results = train_net.main(args)
    assert set(results) == {"tiny_sdagm_test", "tiny_sdagm_test_TTA"}
    for res in results.values():
        assert res["image"]["num_images"] == 6 and 0.0 <= res["image"]["AP"] <= 1.0
    assert os.path.isfile(tmp_path / "inference_TTA" / "tiny_sdagm_test" / "pr_curve.png")
    assert out.is_file()


def test_train_net_rejects_tta_for_other_models():
    from defect_det.engine import train_net

    args = train_net.get_parser().parse_args([
        "--config-file", os.path.join(REPO, "configs", "synthetic", "faster_rcnn_R18_FPN_cpu.yaml"),
        "TEST.AUG.ENABLED", "True"])
    with pytest.raises(ValueError, match="TEST.AUG.ENABLED.*SegDecNet"):
        train_net.setup(args)
    args = train_net.get_parser().parse_args([
        "--config-file", os.path.join(REPO, "configs", "SegDecNet", "synthetic_dagm_cpu.yaml"),
        "TEST.AUG.ENABLED", "True", "MODEL.SEGDEC.TEST_AUG_FLIP", "diagonal"])
    with pytest.raises(ValueError, match="TEST_AUG_FLIP"):
        train_net.setup(args)
    args = train_net.get_parser().parse_args([
        "--config-file", os.path.join(REPO, "configs", "SegDecNet", "synthetic_dagm_cpu.yaml"),
        "TEST.AUG.ENABLED", "True", "MODEL.SEGDEC.TEST_AUG_REDUCE", "median"])
    with pytest.raises(ValueError, match="TEST_AUG_REDUCE"):
        train_net.setup(args)
