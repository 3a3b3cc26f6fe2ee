"""Dataset registration of the COCO export and the AP50 evaluator (no training involved)."""
import json
import math
import os

import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, BoxMode, Instances

import defect_det  # noqa: F401
from defect_det.config import get_defect_cfg
from defect_det.data.datasets import load_tianchi_json, register_tianchi_aluminum, register_tianchi_fabric
from defect_det.evaluation import DefectCOCOEvaluator, build_defect_evaluator, format_summary_table


def _coco(tmp_path, with_templates=True):
    images, anns = [], []
    boxes = {1: [(10, 10, 20, 8, 1), (40, 30, 12, 12, 8)], 2: [(5, 5, 50, 40, 13)], 3: []}
    for img_id, bxs in boxes.items():
        img = {"id": img_id, "file_name": f"defect/{img_id}/{img_id}.jpg", "height": 64, "width": 96,
               "is_normal": not bxs}
        if with_templates:
            img["template_file_name"] = f"defect/{img_id}/template_{img_id}.jpg"
        images.append(img)
        for x, y, w, h, c in bxs:
            anns.append({"id": len(anns) + 1, "image_id": img_id, "category_id": c,
                         "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
    from defect_det.data.datasets.tianchi_categories import FABRIC_CATEGORIES

    cats = [{"id": i + 1, "name": en, "name_zh": zh} for i, (en, zh) in enumerate(FABRIC_CATEGORIES)]
    path = tmp_path / "fabric_test.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return str(path), boxes


def test_load_carries_templates_and_normal_flag(tmp_path):
    json_file, boxes = _coco(tmp_path)
    dicts = load_tianchi_json(json_file, str(tmp_path), require_templates=True)
    assert len(dicts) == 3
    by_id = {d["image_id"]: d for d in dicts}
    assert by_id[1]["template_file_name"] == os.path.join(str(tmp_path), "defect/1/template_1.jpg")
    assert by_id[3]["is_normal"] and not by_id[1]["is_normal"]
    assert len(by_id[1]["annotations"]) == 2
    assert by_id[1]["annotations"][0]["bbox_mode"] == BoxMode.XYWH_ABS


def test_register_fabric_metadata_and_contiguous_ids(tmp_path):
    json_file, _ = _coco(tmp_path)
    register_tianchi_fabric("_t_fabric_reg", json_file, str(tmp_path))
    dicts = DatasetCatalog.get("_t_fabric_reg")
    meta = MetadataCatalog.get("_t_fabric_reg")
    assert len(meta.thing_classes) == 15 and meta.thing_classes[0] == "stained"
    # COCO ids 1..15 -> contiguous 0..14
    cats = sorted(a["category_id"] for d in dicts for a in d["annotations"])
    assert cats == [0, 7, 12]
    assert meta.has_templates


def test_missing_templates_is_an_error_for_fabric_only(tmp_path):
    json_file, _ = _coco(tmp_path, with_templates=False)
    with pytest.raises(ValueError, match="template_file_name"):
        load_tianchi_json(json_file, str(tmp_path), require_templates=True)
    register_tianchi_aluminum("_t_alu_reg", json_file, str(tmp_path))
    assert len(MetadataCatalog.get("_t_alu_reg").thing_classes) == 10


def test_builtin_names_follow_detectron2_datasets(monkeypatch, tmp_path):
    from defect_det.data.datasets import builtin

    builtin.register_all(str(tmp_path / "root"))  # names already registered are kept
    for name in ("synthetic_fabric_train", "synthetic_fabric_test", "synthetic_fabric_unseen",
                 "tianchi_fabric_train", "tianchi_aluminum_test"):
        assert name in DatasetCatalog.list()
    assert MetadataCatalog.get("synthetic_fabric_unseen").json_file.endswith(
        os.path.join("synthetic_fabric", "annotations", "fabric_unseen.json"))


def _predict(evaluator, dicts, shift=0.0, drop_class=None):
    evaluator.reset()
    for d in dicts:
        anns = [a for a in d["annotations"] if a["category_id"] != drop_class]
        inst = Instances((d["height"], d["width"]))
        xyxy = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in anns]
        t = torch.tensor(xyxy, dtype=torch.float32).reshape(-1, 4) + shift
        inst.pred_boxes = Boxes(t)
        inst.scores = torch.full((len(anns),), 0.9)
        inst.pred_classes = torch.tensor([a["category_id"] for a in anns], dtype=torch.int64)
        evaluator.process([{"image_id": d["image_id"]}], [{"instances": inst}])
    return evaluator.evaluate()["bbox"]


def test_evaluator_ap50_per_category(tmp_path):
    json_file, _ = _coco(tmp_path)
    register_tianchi_fabric("_t_fabric_eval", json_file, str(tmp_path))
    dicts = DatasetCatalog.get("_t_fabric_eval")
    cfg = get_defect_cfg()
    ev = build_defect_evaluator(cfg, "_t_fabric_eval", output_dir=str(tmp_path / "ev"), distributed=False)
    assert isinstance(ev, DefectCOCOEvaluator)

    perfect = _predict(ev, dicts)
    assert perfect["AP50"] == pytest.approx(100.0)
    assert perfect["AP50-stained"] == pytest.approx(100.0)
    assert math.isnan(perfect["AP50-insect"])  # no ground truth of that class

    # boxes shifted by 6 px: the 12x12 'broken hole' box falls below IoU 0.5, big boxes survive
    shifted = _predict(ev, dicts, shift=6.0)
    assert shifted["AP50-broken hole"] == pytest.approx(0.0)
    assert shifted["AP50-color shade"] == pytest.approx(100.0)
    assert shifted["AP50"] < perfect["AP50"]

    missing = _predict(ev, dicts, drop_class=12)
    assert missing["AP50-color shade"] == pytest.approx(0.0)

    table = format_summary_table({"_t_fabric_eval": {"bbox": perfect}})
    assert "_t_fabric_eval" in table and "100.0" in table


def test_evaluator_adds_mask_ap_with_mask_on(tmp_path):
    """MODEL.MASK_ON: the evaluator also scores masks (task ``segm``) against the json's RLEs, and
    the summary table gets mask columns. Ground truth: the left half of each box minus one column;
    predicting it scores mask AP50 100, predicting the whole box (mask IoU 0.42-0.48) scores 0."""
    import numpy as np
    import pycocotools.mask as mask_util

    json_file, _ = _coco(tmp_path)
    data = json.loads(open(json_file).read())

    def half(a, h=64, w=96):
        x, y, bw, bh = a["bbox"]
        m = np.zeros((h, w), np.uint8)
        m[y:y + bh, x:x + bw // 2 - 1] = 1
        return m

    for a in data["annotations"]:
        rle = mask_util.encode(np.asfortranarray(half(a)))
        a["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode()}
    with open(json_file, "w") as f:
        json.dump(data, f)
    register_tianchi_fabric("_t_fabric_segm", json_file, str(tmp_path))
    dicts = DatasetCatalog.get("_t_fabric_segm")
    cfg = get_defect_cfg()
    cfg.MODEL.MASK_ON = True
    ev = build_defect_evaluator(cfg, "_t_fabric_segm", output_dir=str(tmp_path / "ev_segm"), distributed=False)

    def run(whole_box):
        ev.reset()
        for d in dicts:
            anns = d["annotations"]
            inst = Instances((d["height"], d["width"]))
            xyxy = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in anns]
            inst.pred_boxes = Boxes(torch.tensor(xyxy, dtype=torch.float32).reshape(-1, 4))
            inst.scores = torch.full((len(anns),), 0.9)
            inst.pred_classes = torch.tensor([a["category_id"] for a in anns], dtype=torch.int64)
            masks = []
            for a in anns:
                m = np.zeros((d["height"], d["width"]), bool)
                x, y, bw, bh = (int(v) for v in a["bbox"])
                m[y:y + bh, x:x + bw] = True
                masks.append(m if whole_box else mask_util.decode(
                    {"size": a["segmentation"]["size"], "counts": a["segmentation"]["counts"].encode()}).astype(bool))
            inst.pred_masks = torch.from_numpy(np.stack(masks)) if masks else torch.zeros((0, 64, 96), dtype=torch.bool)
            ev.process([{"image_id": d["image_id"]}], [{"instances": inst}])
        return ev.evaluate()

    exact = run(False)
    assert exact["bbox"]["AP50"] == pytest.approx(100.0) and exact["segm"]["AP50"] == pytest.approx(100.0)
    assert exact["segm"]["AP50-stained"] == pytest.approx(100.0)
    boxes = run(True)
    assert boxes["bbox"]["AP50"] == pytest.approx(100.0) and boxes["segm"]["AP50"] < 1.0
    table = format_summary_table({"_t_fabric_segm": exact})
    assert "mask AP50" in table and table.count("100.0") >= 3


def test_evaluator_bootstrap_interval(tmp_path):
    """TEST.BOOTSTRAP_ITERS > 0: the box results carry AP50_ci_low/high and
    AP50_agnostic_ci_low/high around AP50 / AP50_agnostic (a perfect detector: [100, 100]), the summary
    table shows them; 0: no interval."""
    json_file, _ = _coco(tmp_path)
    register_tianchi_fabric("_t_fabric_boot", json_file, str(tmp_path))
    dicts = DatasetCatalog.get("_t_fabric_boot")
    cfg = get_defect_cfg()
    cfg.TEST.BOOTSTRAP_ITERS = 200
    ev = build_defect_evaluator(cfg, "_t_fabric_boot", output_dir=str(tmp_path / "ev_boot"), distributed=False)
    perfect = _predict(ev, dicts)
    for key in ("AP50", "AP50_agnostic"):
        assert perfect[key + "_ci_low"] == pytest.approx(100.0) and perfect[key + "_ci_high"] == pytest.approx(100.0)
    assert "100.0 [100.0, 100.0]" in format_summary_table({"_t_fabric_boot": {"bbox": perfect}})
    assert perfect["dets_per_gt"] == pytest.approx(1.0) and perfect["dup_share"] == pytest.approx(0.0)

    shifted = _predict(ev, dicts, shift=6.0)  # one of three boxes missed
    assert shifted["AP50_ci_low"] <= shifted["AP50"] <= shifted["AP50_ci_high"]
    assert shifted["AP50_ci_low"] < shifted["AP50_ci_high"]
    assert shifted["AP50_agnostic_ci_low"] <= shifted["AP50_agnostic"] <= shifted["AP50_agnostic_ci_high"]

    cfg.TEST.BOOTSTRAP_ITERS = 0
    ev = build_defect_evaluator(cfg, "_t_fabric_boot", output_dir=str(tmp_path / "ev_boot0"), distributed=False)
    assert not any(k.endswith(("_ci_low", "_ci_high")) for k in _predict(ev, dicts))
