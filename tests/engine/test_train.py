"""Training / evaluation through DefectTrainer and tools/train_net.py on tiny synthetic data."""
import glob
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model

import defect_det  # noqa: F401
from defect_det.config import get_defect_cfg
from defect_det.engine import DefectTrainer
from defect_det.evaluation import normalize_test_results

from conftest import REPO, TINY_OPTS, tiny_cfg

CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True))


@pytest.mark.parametrize("path", [p for p in CONFIGS if "Base-" not in p
                                  and os.sep + "SegDecNet" + os.sep not in p],  # tested in test_segdec.py
                         ids=lambda p: os.path.relpath(p, REPO))
def test_build_model_from_every_config(path):
    cfg = get_defect_cfg()
    cfg.merge_from_file(path)
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    model.eval()
    with torch.no_grad():
        # "template" is read only by TemplateRCNN configs (TR-Pre / TR-Inter / TR-Post)
        out = model([{"image": torch.zeros(3, 64, 96), "template": torch.zeros(3, 64, 96),
                      "height": 64, "width": 96}])
    assert out[0]["instances"].image_size == (64, 96)
    assert model.roi_heads.num_classes == cfg.MODEL.ROI_HEADS.NUM_CLASSES


def test_train_loss_drops_and_eval_gives_ap50(tiny_fabric, tmp_path):
    torch.manual_seed(0)
    np.random.seed(0)  # the training sampler's seed is drawn from numpy's global state
    # A 20-iteration model may put every class probability at ~0; with the default threshold 0.0
    # a CI run once kept no detection at all (COCOEvaluator then reports NaN). Keep every box so
    # the evaluation path is what is tested, not the luck of 20 iterations.
    cfg = tiny_cfg(tiny_fabric["names"], tmp_path, **{"MODEL.ROI_HEADS.SCORE_THRESH_TEST": "-1.0"})
    trainer = DefectTrainer(cfg)
    trainer.resume_or_load(resume=False)
    results = trainer.train()
    losses = [v for v, _ in trainer.storage.history("total_loss").values()]
    assert len(losses) == 20
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.8 * first, (first, last)
    results = normalize_test_results(results, list(cfg.DATASETS.TEST))
    for name in cfg.DATASETS.TEST:
        ap50 = results[name]["bbox"]["AP50"]
        assert isinstance(ap50, float) and not math.isnan(ap50) and 0.0 <= ap50 <= 100.0
        assert any(k.startswith("AP50-") for k in results[name]["bbox"])
    assert os.path.isfile(os.path.join(tmp_path, "model_final.pth"))


def test_resume_continues_from_last_checkpoint(tiny_fabric, tmp_path):
    cfg = tiny_cfg(tiny_fabric["names"], tmp_path, **{"SOLVER.MAX_ITER": "10", "DATASETS.TEST": "()"})
    trainer = DefectTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    cfg2 = tiny_cfg(tiny_fabric["names"], tmp_path, **{"SOLVER.MAX_ITER": "12", "DATASETS.TEST": "()"})
    trainer2 = DefectTrainer(cfg2)
    trainer2.resume_or_load(resume=True)
    assert trainer2.start_iter == 10  # continued, not restarted
    w1 = trainer.model.state_dict()["roi_heads.box_predictor.cls_score.weight"]
    w2 = trainer2.model.state_dict()["roi_heads.box_predictor.cls_score.weight"]
    assert torch.equal(w1, w2)
    trainer2.train()
    assert trainer2.iter == 12
    # only iterations 10 and 11 ran in the resumed trainer
    assert [it for _, it in trainer2.storage.history("total_loss").values()] == [10, 11]


def _run_train_net(args, env):
    cmd = [sys.executable, os.path.join(REPO, "tools", "train_net.py")] + args
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_train_net_two_process_cpu_then_eval_only(tiny_fabric, tmp_path):
    """2 gloo processes through Detectron2's launch, then --eval-only on the result."""
    env = dict(os.environ, DETECTRON2_DATASETS=tiny_fabric["datasets_root"], OMP_NUM_THREADS="1")
    config = os.path.join(REPO, "configs/synthetic/faster_rcnn_R18_FPN_cpu.yaml")
    out = str(tmp_path / "ddp")
    opts = TINY_OPTS + ["SOLVER.MAX_ITER", "4", "OUTPUT_DIR", out,
                        "DATASETS.TEST", "('synthetic_fabric_unseen',)"]
    r = _run_train_net(["--config-file", config, "--num-gpus", "2", "--dist-url", "auto"] + opts, env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    log = open(os.path.join(out, "log.txt")).read()
    assert "iter: 3" in log
    assert os.path.isfile(os.path.join(out, "model_final.pth"))
    assert "synthetic_fabric_unseen" in r.stdout and "AP50" in r.stdout

    r = _run_train_net(["--config-file", config, "--eval-only", "--vis"] + opts +
                       ["MODEL.WEIGHTS", os.path.join(out, "model_final.pth")], env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "defect_det results" in r.stdout
    pngs = glob.glob(os.path.join(out, "vis", "synthetic_fabric_unseen", "*.png"))
    assert len(pngs) >= 1


def test_train_net_missing_config_is_a_clear_error(tmp_path):
    r = _run_train_net(["--config-file", str(tmp_path / "nope.yaml")], dict(os.environ))
    assert r.returncode != 0
    assert "nope.yaml" in r.stderr and "does not exist" in r.stderr


def test_build_optimizer_sgd_adamw_and_bad_value():
    cfg = get_defect_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs/synthetic/faster_rcnn_R18_FPN_cpu.yaml"))
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    cfg.SOLVER.OPTIMIZER = "SGD"
    opt = DefectTrainer.build_optimizer(cfg, model)
    assert isinstance(opt, torch.optim.SGD)
    cfg.SOLVER.OPTIMIZER = "AdamW"
    cfg.SOLVER.BETAS = (0.8, 0.99)
    opt = DefectTrainer.build_optimizer(cfg, model)
    assert isinstance(opt, torch.optim.AdamW)  # clipping wraps it in a subclass
    assert opt.param_groups[0]["betas"] == (0.8, 0.99)
    # Detectron2's norm-layer groups: BN weights get WEIGHT_DECAY_NORM (0), conv weights WEIGHT_DECAY
    decays = sorted({g["weight_decay"] for g in opt.param_groups})
    assert decays == sorted({cfg.SOLVER.WEIGHT_DECAY_NORM, cfg.SOLVER.WEIGHT_DECAY})
    cfg.SOLVER.OPTIMIZER = "Adam"
    with pytest.raises(ValueError, match="SOLVER.OPTIMIZER"):
        DefectTrainer.build_optimizer(cfg, model)
