"""Bad input at training time stops early and names the file; host projects get our keys and optimizer.

The converter's own checks are in test_convert_tianchi.py; here: the mappers (an unreadable image or
template names the file, also through a DataLoader worker), the template-size check when the loader
is built, train_net's dataset checks before the first iteration, add_defect_config in a host
config, and defect_det.solver.build_optimizer from a plain DefaultTrainer subclass.
"""
import copy
import logging
import os
import sys

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import DefaultTrainer
from PIL import Image
from torch._utils import ExceptionWrapper

import defect_det  # noqa: F401
from defect_det.config import add_defect_config, get_defect_cfg
from defect_det.data import DefectDatasetMapper, UnreadableImageError, build_defect_mapper
from defect_det.rddn import PairedDatasetMapper
from defect_det.solver import build_optimizer

from conftest import REPO, tiny_cfg

W, H = 64, 48
RDDN_PRE = {"MODEL.META_ARCHITECTURE": "TemplateRCNN", "MODEL.ROI_HEADS.NAME": "RDDNStandardROIHeads",
            "MODEL.TEMPLATE.MODE": "pre"}


def _jpeg(path, size=(W, H), seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path, quality=95)
    return str(path)


def _truncated_jpeg(path):
    """A JPEG whose header reads but whose pixels stop at 60%: PIL raises 'image file is truncated'."""
    _jpeg(path)
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: int(len(data) * 0.6)])
    return str(path)


def _record(image, template=None):
    d = {"file_name": image, "height": H, "width": W, "image_id": 0, "is_normal": False,
         "annotations": [{"bbox": [5, 5, 20, 20], "bbox_mode": 0, "category_id": 0}]}
    if template:
        d["template_file_name"] = template
    return d


def _register(name, dicts):
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    DatasetCatalog.register(name, lambda: copy.deepcopy(dicts))
    MetadataCatalog.get(name).set(thing_classes=["a"])
    return name


def _raised_in_worker(fn, *args):
    """What the main process sees when ``fn(*args)`` raises inside a DataLoader worker: PyTorch wraps
    the exception there (ExceptionWrapper) and re-raises it here."""
    try:
        fn(*args)
    except Exception:
        wrapped = ExceptionWrapper(sys.exc_info(), where="in DataLoader worker process 0")
    else:
        raise AssertionError("no error")
    with pytest.raises(Exception) as ei:
        wrapped.reraise()
    return ei.value


# ------------------------------------------------------------------------------------------------
# mappers: a file that does not decode is named


def test_detectron2_mapper_names_a_truncated_image(tmp_path):
    bad = _truncated_jpeg(tmp_path / "bad.jpg")
    mapper = DefectDatasetMapper(True, augmentations=[], image_format="BGR")
    good = mapper(_record(_jpeg(tmp_path / "good.jpg")))  # maps as Detectron2's DatasetMapper does
    assert tuple(good["image"].shape) == (3, H, W) and len(good["instances"]) == 1
    with pytest.raises(UnreadableImageError) as ei:
        mapper(_record(bad))
    assert str(ei.value).startswith(f"{bad}: cannot read this image")
    assert "image file is truncated" in str(ei.value) and "convert_tianchi.py" in str(ei.value)
    # through a DataLoader worker the main process gets the same type and message
    err = _raised_in_worker(mapper, _record(bad))
    assert isinstance(err, UnreadableImageError) and bad in str(err)


def test_detectron2_mapper_names_a_missing_image(tmp_path):
    gone = str(tmp_path / "gone.jpg")
    mapper = DefectDatasetMapper(False, augmentations=[], image_format="BGR")
    with pytest.raises(UnreadableImageError, match=f"{gone}: cannot read this image .FileNotFoundError"):
        mapper(_record(gone))


def test_detectron2_mapper_keeps_errors_that_are_not_the_file(tmp_path):
    """An error with a readable image is re-raised unchanged (not blamed on the file)."""
    d = _record(_jpeg(tmp_path / "good.jpg"))
    d["width"] = W + 1  # the dataset dict disagrees with the image
    mapper = DefectDatasetMapper(True, augmentations=[], image_format="BGR")
    with pytest.raises(Exception) as ei:
        mapper(d)
    assert not isinstance(ei.value, UnreadableImageError) and "Mismatched image shape" in str(ei.value)


@pytest.mark.parametrize("bad", ["image", "template"])
def test_paired_mapper_names_a_truncated_image_or_template(tmp_path, bad):
    image = _jpeg(tmp_path / "img.jpg")
    template = _jpeg(tmp_path / "template.jpg", seed=1)
    path = _truncated_jpeg(tmp_path / ("img.jpg" if bad == "image" else "template.jpg"))
    mapper = PairedDatasetMapper(True, augmentations=[], image_format="BGR", template_usage="required")
    err = _raised_in_worker(mapper, _record(image, template))
    assert isinstance(err, UnreadableImageError)
    assert f"{path}: cannot read this {bad}" in str(err) and "image file is truncated" in str(err)


def test_segdec_mapper_names_a_truncated_image(tmp_path):
    from defect_det.segdec.mapper import SegDecDatasetMapper

    bad = _truncated_jpeg(tmp_path / "bad.jpg")
    mapper = SegDecDatasetMapper(True, image_format="RGB", input_size=(H, W))
    with pytest.raises(UnreadableImageError, match=f"{bad}: cannot read this image"):
        mapper({"file_name": bad, "height": H, "width": W, "label": 0, "image_id": 0})


# ------------------------------------------------------------------------------------------------
# template size: checked once, when the loader is built


def test_template_of_another_size_stops_loader_construction(tiny_fabric, tmp_path, monkeypatch):
    image = _jpeg(tmp_path / "img.jpg")
    good_t = _jpeg(tmp_path / "t_good.jpg", seed=1)
    small_t = _jpeg(tmp_path / "t_small.jpg", size=(W - 4, H), seed=2)
    dicts = [_record(image, good_t), dict(_record(image, small_t), image_id=1),
             dict(_record(image, small_t), image_id=2)]
    name = _register("tiny_template_size", dicts)
    cfg = tiny_cfg(tiny_fabric["names"], tmp_path, **RDDN_PRE)
    # no sample may be read while the loader is built: only headers
    monkeypatch.setattr(PairedDatasetMapper, "__call__", lambda *a: pytest.fail("a sample was mapped"))
    with pytest.raises(ValueError) as ei:
        build_defect_mapper(cfg, True, [name])
    msg = str(ei.value)
    assert f"dataset '{name}': 2 of 3 templates differ in size" in msg
    assert f"template {small_t} is {W - 4}x{H}" in msg and f"image {image} is {W}x{H}" in msg
    with pytest.raises(ValueError, match="2 of 3 templates differ"):  # the test loader too
        build_defect_mapper(cfg, False, [name])
    # same check through the trainer's loader
    cfg.DATASETS.TRAIN = (name,)
    from defect_det.engine import DefectTrainer

    with pytest.raises(ValueError, match="2 of 3 templates differ"):
        DefectTrainer.build_train_loader(cfg)


def test_missing_template_stops_loader_construction(tiny_fabric, tmp_path):
    image = _jpeg(tmp_path / "img.jpg")
    gone = str(tmp_path / "t_gone.jpg")
    name = _register("tiny_template_gone", [_record(image, gone)])
    cfg = tiny_cfg(tiny_fabric["names"], tmp_path, **RDDN_PRE)
    with pytest.raises(UnreadableImageError, match=f"{gone}: cannot read this template .of {image}, "
                                                   f"dataset '{name}'.*FileNotFoundError"):
        build_defect_mapper(cfg, True, [name])


# ------------------------------------------------------------------------------------------------
# train_net: every dataset checked before the first iteration


def _train_net():
    from defect_det.engine import train_net

    return train_net


def _train_net_args(tiny_fabric, tmp_path, *opts):
    from conftest import TINY_OPTS

    return _train_net().get_parser().parse_args([
        "--config-file", os.path.join(REPO, "configs/synthetic/faster_rcnn_R18_FPN_cpu.yaml"), *TINY_OPTS,
        "SOLVER.MAX_ITER", "2", "OUTPUT_DIR", str(tmp_path),
        "DATASETS.TRAIN", f"('{tiny_fabric['names']['train']}',)", *opts])


def _trained(out):
    return [f for f in os.listdir(out) if f.endswith(".pth")] or ("iter:" in open(os.path.join(out, "log.txt")).read())


def test_train_net_unregistered_test_dataset_fails_before_training(tiny_fabric, tmp_path):
    args = _train_net_args(tiny_fabric, tmp_path, "DATASETS.TEST",
                           f"('{tiny_fabric['names']['test']}', 'fabric_tset')")
    with pytest.raises(KeyError) as ei:
        _train_net().main(args)
    msg = str(ei.value)
    assert "DATASETS.TEST: dataset 'fabric_tset' is not registered" in msg
    assert tiny_fabric["names"]["test"] in msg  # the registered names are listed
    assert not _trained(tmp_path)


def test_train_net_missing_image_files_fail_before_training(tiny_fabric, tmp_path):
    dicts = DatasetCatalog.get(tiny_fabric["names"]["unseen"])
    moved = [dict(d, file_name=d["file_name"] + ".moved") for d in dicts[:2]] + dicts[2:]
    name = _register("tiny_unseen_moved", moved)
    args = _train_net_args(tiny_fabric, tmp_path, "DATASETS.TEST", f"('{name}',)")
    with pytest.raises(ValueError) as ei:
        _train_net().main(args)
    n_files = len({d[k] for d in moved for k in ("file_name", "template_file_name") if d.get(k)})
    first = sorted(d["file_name"] for d in moved[:2])[0]
    assert f"DATASETS.TEST: dataset '{name}': 2 of {n_files} files named by its {len(moved)} images are " \
           f"missing (first: {first})" in str(ei.value)
    assert not _trained(tmp_path)

    args = _train_net_args(tiny_fabric, tmp_path, "DATASETS.TRAIN", f"('{name}',)", "DATASETS.TEST", "()")
    with pytest.raises(ValueError, match=f"DATASETS.TRAIN: dataset '{name}': 2 of"):
        _train_net().main(args)


def test_train_net_dataset_whose_json_is_gone_fails_before_training(tiny_fabric, tmp_path):
    from defect_det.data.datasets import register_tianchi_fabric

    name = "tiny_fabric_json_gone"
    if name not in DatasetCatalog.list():
        register_tianchi_fabric(name, str(tmp_path / "nowhere.json"), tiny_fabric["root"])
    args = _train_net_args(tiny_fabric, tmp_path, "DATASETS.TEST", f"('{name}',)")
    with pytest.raises(RuntimeError, match=f"DATASETS.TEST: dataset '{name}' does not load .*nowhere.json"):
        _train_net().main(args)
    assert not _trained(tmp_path)


# ------------------------------------------------------------------------------------------------
# host projects: add_defect_config and build_optimizer


def _host_cfg():
    """A host project's Detectron2 config with keys of its own, one of them TEST.EVALUATOR."""
    from detectron2.config import CfgNode as CN
    from detectron2.config import get_cfg

    cfg = get_cfg()
    cfg.TEST.EVALUATOR = "HostEvaluator"
    cfg.HOST = CN({"FLAG": True})
    return cfg


def test_add_defect_config_on_a_host_config_with_its_own_evaluator_key(caplog):
    cfg = _host_cfg()
    with caplog.at_level(logging.WARNING, logger="defect_det.config"):
        add_defect_config(cfg)
    assert cfg.MODEL.ROI_HEADS.NMS_TYPE == "hard" and cfg.SOLVER.OPTIMIZER == "SGD"  # our keys are there
    assert cfg.HOST.FLAG is True and cfg.DEFECT_DET.CONFIG_VERSION == 1
    assert "TEST.EVALUATOR" in caplog.text  # the replaced value is reported
    cfg.merge_from_file(os.path.join(REPO, "configs/synthetic/faster_rcnn_R18_FPN_cpu.yaml"))
    assert cfg.SOLVER.OPTIMIZER == "AdamW"
    # idempotent through the marker: a second call (also on a clone) keeps every value
    cfg.MODEL.ROI_HEADS.NMS_TYPE = "sinkhorn"
    for c in (cfg, cfg.clone()):
        add_defect_config(c)
        assert c.MODEL.ROI_HEADS.NMS_TYPE == "sinkhorn" and c.SOLVER.OPTIMIZER == "AdamW"


def test_add_defect_config_is_silent_on_a_plain_config(caplog):
    from detectron2.config import get_cfg

    with caplog.at_level(logging.WARNING, logger="defect_det.config"):
        cfg = add_defect_config(get_cfg())
    assert caplog.text == "" and cfg.TEST.EVALUATOR == "DefectCOCOEvaluator"


def test_build_optimizer_from_a_host_default_trainer():
    """Our configs with Detectron2's own DefaultTrainer: SGD, whatever SOLVER.OPTIMIZER says; a host
    subclass that returns defect_det.solver.build_optimizer gets the optimizer of the config."""
    cfg = get_defect_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs/synthetic/faster_rcnn_R18_FPN_cpu.yaml"))
    assert cfg.SOLVER.OPTIMIZER == "AdamW"
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))

    class HostTrainer(DefaultTrainer):
        @classmethod
        def build_optimizer(cls, cfg, model):
            return build_optimizer(cfg, model)

    assert isinstance(DefaultTrainer.build_optimizer(cfg, model), torch.optim.SGD)  # the silent fallback
    opt = HostTrainer.build_optimizer(cfg, model)
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.param_groups[0]["betas"] == tuple(cfg.SOLVER.BETAS)
    assert {g["lr"] for g in opt.param_groups} == {cfg.SOLVER.BASE_LR}
    cfg.SOLVER.OPTIMIZER = "SGD"
    assert isinstance(HostTrainer.build_optimizer(cfg, model), torch.optim.SGD)
    cfg.SOLVER.OPTIMIZER = "adam"
    with pytest.raises(ValueError, match=r"SOLVER.OPTIMIZER must be one of \('SGD', 'AdamW'\), got 'adam'"):
        HostTrainer.build_optimizer(cfg, model)
