"""Weak-mask evaluation: masks on the ground-truth boxes, the network-free difference references, and the
results table (tools/weak_mask_table.py) on the shared table runner."""
import argparse
import json
import os

import pytest
import torch
from detectron2.modeling import build_model

import defect_det  # noqa: F401
from defect_det.config import get_defect_cfg

from conftest import REPO

from weak_mask_models import _blocky, _cfg, _one_thread  # noqa: F401  (_one_thread: autouse fixture)


def test_weak_mask_table_rows_configs_and_gap():
    """Every trained or evaluated row's config builds a mask model; evaluation rows read a trained row's
    weights; computed rows are the network-free references; gap arithmetic."""
    from defect_det.weak_mask import table

    assert table.gap_recovered(5.0, 2.0, 8.0) == 0.5 and table.gap_recovered(2.0, 2.0, 2.0) is None
    assert table.gap_recovered(9.0, 2.0, 8.0) > 1.0 and table.gap_recovered(None, 2.0, 8.0) is None
    trained = [k for k in table.ROWS if k not in table.EVAL_ONLY and k not in table.COMPUTED]
    assert set(trained) == {"box", "box_no_template", "mask", "ptg_box"}
    assert all(src in trained for src in table.EVAL_ONLY.values())
    assert set(table.COMPUTED) == {k for k, (_, tool, _) in table.ROWS.items() if tool == table.DIFF_TOOL}
    for key, (_, cfg_file, opts) in table.ROWS.items():
        if key in table.COMPUTED:
            continue
        cfg = get_defect_cfg()
        cfg.merge_from_file(os.path.join(REPO, cfg_file))
        cfg.merge_from_list(list(opts))
        assert cfg.MODEL.MASK_ON and cfg.INPUT.MASK_FORMAT == "bitmask"
        if key.startswith("ptg_"):  # no template anywhere: PTG detector, no template cue in the head
            assert cfg.MODEL.TEMPLATE.MODE == "ptg" and not cfg.MODEL.ROI_MASK_HEAD.WEAK.USE_TEMPLATE
        build_model(cfg)
    with pytest.raises(SystemExit, match="unknown rows"):
        table.main(["--rows", "nope"])


def _square_record(tmp_path, with_template=True):
    """A 64 x 64 textured image whose 12 x 12 square defect (in a 24 x 24 GT box) differs from its template."""
    import cv2
    import numpy as np
    import pycocotools.mask as mask_util

    rng = np.random.default_rng(0)
    template = (100 + 20 * rng.random((64, 64, 3))).astype(np.uint8)
    image = template.copy()
    image[26:38, 26:38] += 80
    cv2.imwrite(str(tmp_path / "img.png"), image)
    cv2.imwrite(str(tmp_path / "tmpl.png"), template)
    gt = np.zeros((64, 64), np.uint8)
    gt[26:38, 26:38] = 1
    rle = mask_util.encode(np.asfortranarray(gt))
    rle["counts"] = rle["counts"].decode()
    d = {"file_name": str(tmp_path / "img.png"), "height": 64, "width": 64, "image_id": 0,
         "annotations": [{"bbox": [20, 20, 44, 44], "bbox_mode": 0, "category_id": 0, "segmentation": rle}]}
    if with_template:
        d["template_file_name"] = str(tmp_path / "tmpl.png")
    return d


def test_difference_masks_find_the_defect_that_differs_from_the_template(tmp_path):
    from defect_det.weak_mask.difference_masks import difference_mask_ious

    d = _square_record(tmp_path)
    ious = difference_mask_ious([d], [0.5], reference="template", blur=0)
    assert ious["kappa=0.5"][0] > 0.95                       # the square itself
    assert abs(ious["filled box"][0] - 144 / 576) < 0.01     # the box is 4x the defect
    median = difference_mask_ious([d], [0.5], reference="median", blur=0, median_size=31)
    assert 0.0 <= median["kappa=0.5"][0] <= 1.0              # runs without reading a template
    with pytest.raises(ValueError, match="img.png: no template_file_name"):
        difference_mask_ious([_square_record(tmp_path, with_template=False)], [0.5], reference="template")
    with pytest.raises(ValueError, match="kappa"):
        difference_mask_ious([d], [0.0])


def test_iou_summary_interval_brackets_the_mean_and_is_deterministic():
    from defect_det.weak_mask.evaluation import iou_summary

    ious = [0.1, 0.9, 0.5, 0.7, 0.3, 0.6]
    s = iou_summary(ious)
    assert s["mIoU_ci_low"] < s["mIoU"] < s["mIoU_ci_high"] and s["instances"] == 6
    assert s == iou_summary(ious) and s["IoU>=0.5"] == 4 / 6
    assert iou_summary([0.4] * 5)["mIoU_ci_low"] == pytest.approx(0.4)
    assert iou_summary([])["instances"] == 0


def test_computed_rows_train_nothing_and_post_metrics_join_the_record(tmp_path, monkeypatch):
    """A computed row is written from its function (no subprocess); a trained row's record carries the metrics
    of the spec's post hook beside train_net's; the README table shows mean ± std and the gap closed."""
    from defect_det.utils import table_runner
    from defect_det.weak_mask import table

    calls = []

    def fake_compute(args, key, seed, datasets):
        calls.append((key, datasets))
        return {ds: {"gt_boxes": {"mIoU": 60.0, "mIoU_ci_low": 55.0, "mIoU_ci_high": 65.0}} for ds in datasets}, "cmd"

    monkeypatch.setitem(table.SPEC.computed, "diff_k0.4", fake_compute)
    monkeypatch.setattr(table_runner, "start_row", lambda *a: pytest.fail("a computed row started a training"))
    results = tmp_path / "results"
    args = table_runner.get_parser(table.SPEC).parse_args(
        ["--rows", "diff_k0.4", "--out", str(tmp_path / "out"), "--results", str(results)])
    assert table_runner.run_rows(table.SPEC, args) == []
    assert calls == [("diff_k0.4", (table.VAL,))]
    rec = json.loads((results / "diff_k0.4_s0.json").read_text())
    assert rec["metrics"][table.VAL]["gt_boxes"]["mIoU"] == 60.0 and rec["iters"] == 0
    assert table_runner.run_rows(table.SPEC, args) == [] and len(calls) == 1      # never recomputed
    seeds = table_runner.get_parser(table.SPEC).parse_args(
        ["--rows", "diff_k0.4", "--seeds", "0", "1", "--out", str(tmp_path / "out"), "--results", str(results)])
    assert table_runner.run_rows(table.SPEC, seeds) == [] and len(calls) == 1     # seed-independent: seed 0 only
    assert not (results / "diff_k0.4_s1.json").exists()

    # a trained row: train_net's results.json + the post hook's metrics in one record
    out = tmp_path / "out" / "box_s0"
    out.mkdir(parents=True)
    (out / "results.json").write_text(json.dumps({table.VAL: {"bbox": {"AP50": 30.0}, "segm": {"AP50": 20.0}}}))

    class Done:
        def wait(self):
            return 0

    hook = []
    spec = table_runner.TableSpec(**{**table.SPEC.__dict__, "post": lambda *a: hook.append(a) or
                                     {table.VAL: {"gt_boxes": {"mIoU": 64.0}}}})
    assert table_runner.finish_row(spec, args, "box", 0, Done(), str(out), ["train"], 0.0)
    assert hook[0][5].endswith("box_s0/model_final.pth") and hook[0][6] == (table.VAL,)
    rec = json.loads((results / "box_s0.json").read_text())
    assert rec["metrics"][table.VAL] == {"bbox": {"AP50": 30.0}, "segm": {"AP50": 20.0}, "gt_boxes": {"mIoU": 64.0}}
    # evaluation-only rows read their source row's weights
    assert table_runner.row_weights(table.SPEC, args, "filled_box", 1).endswith("box_s1/model_final.pth")

    def record(row, seed, miou):
        return dict(rec, row=row, seed=seed, metrics={table.VAL: {"gt_boxes": {"mIoU": miou}, "bbox": {"AP50": 1.0}}})

    for row, values in {"filled_box": [50.0, 50.0], "mask": [70.0, 70.0], "box": [64.0, 66.0]}.items():
        for seed, v in enumerate(values):
            (results / f"{row}_s{seed}.json").write_text(json.dumps(record(row, seed, v)))
    text = table.render(argparse.Namespace(results=str(results)))
    rows = {}
    for ln in text.splitlines():
        if ln.startswith("| `"):
            rows.setdefault(ln.split("`")[1], ln)                # the first table; the gap table follows
    assert "65.0 ± 1.4 (n=2)" in rows["box"] and "+15.0 (beats)" in rows["box"]
    gap = [ln for ln in text.splitlines() if ln.startswith("| `box` |")][-1]
    assert "| 75% |" in gap                                   # (65 - 50) / (70 - 50)


# ------------------------------------------------------------------------ masks on the GT boxes
def test_decode_segmentation_rle_polygon_and_size_check():
    import numpy as np
    import pycocotools.mask as mask_util

    from defect_det.weak_mask.evaluation import decode_segmentation

    m = np.zeros((20, 30), np.uint8)
    m[5:9, 10:25] = 1
    rle = mask_util.encode(np.asfortranarray(m))
    rle["counts"] = rle["counts"].decode()
    assert (decode_segmentation(rle, 20, 30) == m.astype(bool)).all()
    poly = [[10.0, 5.0, 25.0, 5.0, 25.0, 9.0, 10.0, 9.0]]
    assert abs(int(decode_segmentation(poly, 20, 30).sum()) - int(m.sum())) <= 20  # polygon rasterisation edge
    with pytest.raises(ValueError, match="size"):
        decode_segmentation(rle, 21, 30)
    with pytest.raises(ValueError, match="unsupported"):
        decode_segmentation("x", 20, 30)
    from defect_det.weak_mask.evaluation import annotation_mask

    record = {"file_name": "img7.jpg", "height": 21, "width": 30, "annotations": [{"segmentation": rle}]}
    with pytest.raises(ValueError, match="img7.jpg: annotation 0: segmentation: .*size"):
        annotation_mask(record, 0)


@pytest.mark.parametrize("scale", [1, 2])
def test_masks_on_gt_boxes_scores_the_mask_branch_on_the_gt_boxes(scale):
    """FilledBoxMaskHead pastes each GT box: IoU ~1 against a filled-box GT mask, ~1/2 against the
    box's left half; the boxes follow the mapper's resize (scale 2) and the masks come back at the
    original size."""
    import numpy as np
    import pycocotools.mask as mask_util

    from defect_det.weak_mask.evaluation import masks_on_gt_boxes

    torch.manual_seed(0)
    model = build_model(_cfg(**{"MODEL.ROI_MASK_HEAD.NAME": "FilledBoxMaskHead"})).eval()
    h, w = 96, 128
    boxes = [[8, 8, 56, 40], [60, 20, 120, 90]]

    def rle(mask):
        r = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
        r["counts"] = r["counts"].decode()
        return r

    def record(half):
        anns = []
        for i, (x0, y0, x1, y1) in enumerate(boxes):
            m = np.zeros((h, w), bool)
            m[y0:y1, x0:(x0 + x1) // 2 if half else x1] = True
            anns.append({"bbox": [x0, y0, x1, y1], "bbox_mode": 0, "category_id": i, "segmentation": rle(m)})
        anns.append({"bbox": [0, 0, 4, 4], "bbox_mode": 0, "category_id": 0})  # no mask: counted, skipped
        return {"file_name": "x.png", "height": h, "width": w, "image_id": 0, "annotations": anns}

    def mapper(d):
        img = torch.nn.functional.interpolate(_blocky(h, w, 0)[None].float(), scale_factor=scale)[0]
        return {"image": img.to(torch.uint8), "template": img.to(torch.uint8), "height": d["height"],
                "width": d["width"]}

    full = masks_on_gt_boxes(model, [record(False)], mapper)
    assert full["instances"] == 2 and full["skipped"] == 1
    assert full["mIoU"] > 0.9 and full["IoU>=0.75"] == 1.0
    half = masks_on_gt_boxes(model, [record(True)], mapper)
    assert 0.4 < half["mIoU"] < 0.6 and half["IoU>=0.5"] <= 1.0 and half["IoU>=0.75"] == 0.0


# ------------------------------------------------------------------------ template-difference loss
