"""Stochastic weight averaging hook: which iterations enter the mean, the mean itself, resuming
from its saved state, and the DefectTrainer integration (model_final.pth holds the mean)."""
import os
import types

import pytest
import torch
from torch import nn

from defect_det.engine.weight_averaging import WeightAverage, WeightAveragingHook

from conftest import REPO, tiny_segdec_cfg


def _run(hook, model, iters, values):
    """Drive ``hook`` as a trainer would, setting every parameter to ``values[it]`` at step ``it``."""
    hook.trainer = types.SimpleNamespace(iter=0)
    for it in iters:
        hook.trainer.iter = it
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(values[it])
        hook.after_step()


def test_averaged_iterations_and_mean():
    model = nn.Linear(3, 2)
    hook = WeightAveragingHook(model, start_iter=5, period=3, max_iter=13)
    assert [it for it in range(13) if hook.averaged_iteration(it)] == [5, 8, 11, 12]
    values = [float(v * v) for v in range(13)]  # not linear: a wrong set of iterations shows
    _run(hook, model, range(13), values)
    expected = sum(values[i] for i in (5, 8, 11, 12)) / 4
    for p in model.parameters():
        assert torch.allclose(p, torch.full_like(p, expected))
    assert int(hook.average.num_averaged) == 4


def test_resume_continues_the_same_average():
    values = [float(v * v) for v in range(20)]
    model = nn.Linear(2, 2)
    full = WeightAveragingHook(model, 4, 2, 20)
    _run(full, model, range(20), values)
    # interrupted after iteration 9: a new hook loads the saved state and goes on
    model2 = nn.Linear(2, 2)
    first = WeightAveragingHook(model2, 4, 2, 20)
    _run(first, model2, range(10), values)
    saved = {k: v.clone() for k, v in first.average.state_dict().items()}
    model3 = nn.Linear(2, 2)
    second = WeightAveragingHook(model3, 4, 2, 20)
    second.average.load_state_dict(saved)
    _run(second, model3, range(10, 20), values)
    for p, q in zip(model.parameters(), model3.parameters()):
        assert torch.allclose(p, q)


def test_errors():
    model = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="PERIOD"):
        WeightAveragingHook(model, 0, 0, 10)
    with pytest.raises(ValueError, match="START"):
        WeightAveragingHook(model, 10, 1, 10)
    with pytest.raises(RuntimeError, match="nothing"):
        WeightAverage(model).copy_to(model)
    from defect_det.config import get_defect_cfg

    cfg = get_defect_cfg()
    cfg.SOLVER.SWA.START = 1.0
    with pytest.raises(ValueError, match="SOLVER.SWA.START"):
        WeightAveragingHook.from_config(cfg, model)


def test_defect_trainer_writes_the_averaged_model(tiny_dagm, tmp_path):
    from detectron2.checkpoint import DetectionCheckpointer

    from defect_det.engine import DefectTrainer

    cfg = tiny_segdec_cfg(tiny_dagm, tmp_path, "SOLVER.MAX_ITER", "8", "SOLVER.SWA.ENABLED", "True",
                          "SOLVER.SWA.START", "0.5", "SOLVER.SWA.PERIOD", "2", "TEST.AUG.ENABLED", "False")
    trainer = DefectTrainer(cfg)
    trainer.resume_or_load(resume=False)
    (hook,) = [h for h in trainer._hooks if isinstance(h, WeightAveragingHook)]
    kinds = [type(h).__name__ for h in trainer._hooks]
    assert kinds.index("WeightAveragingHook") < kinds.index("PeriodicCheckpointer") < kinds.index("EvalHook")
    snapshots, original = {}, hook.average.update

    def update(model):  # record every iterate that enters the mean
        snapshots[trainer.iter] = {k: v.detach().clone() for k, v in model.named_parameters()}
        original(model)

    hook.average.update = update
    trainer.train()
    assert sorted(snapshots) == [4, 6, 7]  # START 0.5 of 8 iterations, PERIOD 2, and the last one
    saved = torch.load(os.path.join(str(tmp_path), "model_final.pth"), map_location="cpu")
    assert int(saved["weight_averaging"]["num_averaged"]) == 3
    for name, param in trainer.model.named_parameters():
        expected = sum(s[name] for s in snapshots.values()) / 3
        assert torch.allclose(param.detach(), expected, atol=1e-6)
        assert torch.allclose(saved["model"][name], expected, atol=1e-6)
    name = "segmentation.head.weight" if "segmentation.head.weight" in snapshots[7] else next(iter(snapshots[7]))
    assert not torch.allclose(snapshots[7][name], snapshots[4][name])  # the iterates differ
    # the checkpoint loads back into a fresh model through Detectron2's checkpointer
    model = DefectTrainer.build_model(cfg)
    DetectionCheckpointer(model).load(os.path.join(str(tmp_path), "model_final.pth"))
    for name, param in model.named_parameters():
        assert torch.allclose(param, saved["model"][name])


def test_bn_models_are_refused(tiny_fabric, tmp_path):
    from defect_det.config import get_defect_cfg
    from defect_det.engine import DefectTrainer

    cfg = get_defect_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "synthetic", "faster_rcnn_R18_FPN_cpu.yaml"))
    cfg.merge_from_list(["SOLVER.SWA.ENABLED", "True", "OUTPUT_DIR", str(tmp_path),
                         "MODEL.RESNETS.NORM", "BN", "MODEL.FPN.NORM", "", "DATALOADER.NUM_WORKERS", "0",
                         "DATASETS.TRAIN", "('tiny_fabric_train',)", "DATASETS.TEST", "('tiny_fabric_test',)"])
    with pytest.raises(ValueError, match="SOLVER.SWA.ENABLED.*BatchNorm"):
        DefectTrainer(cfg)
