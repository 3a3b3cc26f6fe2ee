"""tools/calibrate.py's library (defect_det/inference/calibrate.py): image-level thresholds, AUROC / AP on
known cases, per-class thresholds, the confusion matrix, and the thresholds JSON read by predict.py."""
import csv
import json
import os

import numpy as np
import pytest

from model_files import TR_PRE, saved_model  # tests/inference/model_files.py
from defect_det.inference.calibrate import (
    auroc,
    average_precision,
    best_f1_threshold,
    class_thresholds,
    confusion_matrix,
    load_thresholds,
    match_detections,
    threshold_for_recall,
)


def test_image_level_metrics_and_thresholds():
    scores = [0.9, 0.8, 0.7, 0.6, 0.4, 0.3, 0.2]
    labels = [1, 1, 0, 1, 0, 1, 0]
    # positives 0.9 0.8 0.6 0.3 vs negatives 0.7 0.4 0.2: 9 of 12 pairs ordered
    assert auroc(scores, labels) == pytest.approx(9 / 12)
    # precision at each recall step: 1, 1, 3/4, 4/6
    assert average_precision(scores, labels) == pytest.approx(0.25 * (1 + 1 + 0.75 + 4 / 6))
    r = threshold_for_recall(scores, labels, 0.75)
    assert r["threshold"] == 0.6 and r["recall"] == 0.75 and r["precision"] == 0.75
    assert threshold_for_recall(scores, labels, 1.0)["threshold"] == 0.3
    f1 = best_f1_threshold(scores, labels)
    # F1 at 0.8 / 0.6 / 0.3: 0.667 / 0.75 / 0.8
    assert f1["threshold"] == 0.3 and f1["f1"] == pytest.approx(0.8)
    with pytest.raises(ValueError, match="recall"):
        threshold_for_recall(scores, labels, 0.0)
    with pytest.raises(ValueError, match="no defective image"):
        threshold_for_recall([0.1], [0], 0.9)


def _image(gt, gtc, boxes, scores, classes):
    f = lambda x: np.asarray(x, float).reshape(-1, 4)  # noqa: E731
    return {"gt_boxes": f(gt), "gt_classes": np.asarray(gtc, int), "boxes": f(boxes),
            "scores": np.asarray(scores, float), "classes": np.asarray(classes, int)}


def test_per_class_thresholds_and_confusion_matrix():
    images = [
        _image([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 1],
               [[0, 0, 10, 10], [1, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]], [0.9, 0.6, 0.8, 0.7], [0, 0, 0, 1]),
        _image([[0, 0, 10, 10]], [0], [[0, 0, 10, 10]], [0.5], [0]),
    ]
    m = match_detections(images, 2)
    s0, hit0, n0 = m[0]
    assert n0 == 2 and sorted(zip(s0.tolist(), hit0.tolist())) == [(0.5, 1), (0.6, 0), (0.8, 0), (0.9, 1)]
    th = class_thresholds(m)
    # class 0 in decreasing score: 0.9 hit, 0.8 miss, 0.6 miss, 0.5 hit -> F1 0.667 at 0.9 and at 0.5: the first
    assert th == {0: 0.9, 1: None}
    cm = confusion_matrix(images, 2, th)
    # box of class 0 (image 1) found as class 0; the class-1 box: the class-0 detection at 0.8 is below 0.9 ->
    # missed; class 0 box of image 2: its 0.5 detection is below 0.9 -> missed; no kept detection left over
    assert cm.tolist() == [[1, 0, 1], [0, 0, 1], [0, 0, 0]]
    cm = confusion_matrix(images, 2, {0: 0.5, 1: 0.5})
    # class-1 box taken by the class-0 detection (wrong class); the class-1 detection on no box: background row
    assert cm[1, 0] == 1 and cm[2, 1] == 1 and cm[2, 0] == 1   # the 0.6 duplicate is a detection on no box


def test_calibrate_then_predict_with_thresholds(tiny_fabric, tmp_path):
    from defect_det.inference.calibrate import main as calibrate_main
    from defect_det.inference.cli import main as predict_main

    names = tiny_fabric["names"]
    cfg_file, weights = saved_model(names, tmp_path, **TR_PRE)
    out = tmp_path / "cal"
    res = calibrate_main(["--config-file", cfg_file, "--dataset", names["test"], "--output", str(out),
                          "--recall", "0.9", "MODEL.WEIGHTS", weights])
    saved = json.loads((out / "thresholds.json").read_text())
    assert saved["image_threshold"] == res["at_target_recall"]["threshold"]
    assert saved["at_target_recall"]["recall"] >= 0.9
    for png in ("image_pr.png", "image_roc.png", "class_pr.png", "confusion_matrix.png"):
        assert (out / png).stat().st_size > 1000
    th = load_thresholds(str(out / "thresholds.json"))
    assert th["image"] == saved["image_threshold"] and set(th["classes"]) == set(saved["class_thresholds"])
    pred = tmp_path / "pred"
    rows = predict_main(["--config-file", cfg_file, "--input", os.path.join(tiny_fabric["root"], "seen"),
                         "--output", str(pred), "--thresholds", str(out / "thresholds.json"), "--no-progress",
                         "MODEL.WEIGHTS", weights])
    with open(pred / "decisions.csv") as f:
        decisions = {d["image"]: d["decision"] for d in csv.DictReader(f)}
    for r in rows:  # NG exactly when the best score reaches the calibrated threshold or a class threshold
        assert decisions[r["image"]] == ("NG" if r["max_score"] >= th["image"] or r["defects"] else "OK")
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(ValueError, match="image_threshold"):
        load_thresholds(str(bad))
