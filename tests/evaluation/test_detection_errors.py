"""defect_det.evaluation.detection_errors (tools/detection_errors.py) on a hand-made case where every
kind of detection occurs once."""
import pytest

from defect_det.evaluation import detection_errors as tool


def test_every_kind_counted_once():
    gt = {"images": [{"id": 1}, {"id": 2}],
          "categories": [{"id": 1, "name": "knot"}, {"id": 2, "name": "seam"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]},
                          {"id": 2, "image_id": 1, "category_id": 2, "bbox": [50, 50, 40, 10]}]}
    dets = [
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9},    # TP
        {"image_id": 1, "category_id": 1, "bbox": [1, 0, 10, 10], "score": 0.8},    # duplicate
        {"image_id": 1, "category_id": 1, "bbox": [50, 50, 40, 10], "score": 0.6},  # wrong class (seam box)
        {"image_id": 1, "category_id": 2, "bbox": [50, 50, 10, 10], "score": 0.4},  # fragment: IoU 0.25
        {"image_id": 1, "category_id": 2, "bbox": [200, 200, 5, 5], "score": 0.35},  # background
        {"image_id": 2, "category_id": 2, "bbox": [0, 0, 5, 5], "score": 0.2},     # on a defect-free image
    ]
    r = tool.detection_errors(gt, dets, thresholds=(0.0, 0.5))
    assert r["counts"][0.0] == {"TP": 1, "duplicate": 1, "wrong_cls": 1, "poor_loc": 1, "bg": 1, "bg_normal": 1}
    assert r["counts"][0.5] == {"TP": 1, "duplicate": 1, "wrong_cls": 1, "poor_loc": 0, "bg": 0, "bg_normal": 0}
    assert r["recall"][0.0] == {"any": 1.0, "same_class": 0.5}
    assert r["poor_loc_area_ratio"] == {"seam": {"n": 1, "median": pytest.approx(0.25)}}
    assert "| 0.5 | 1 | 1 | 1 | 0 | 0 | 0 | 1.00 | 0.50 |" in tool.format_report(r)


def test_detections_per_gt_counts_duplicates():
    from defect_det.evaluation.detection_errors import detections_per_gt

    anns = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]},
            {"image_id": 1, "category_id": 2, "bbox": [50, 50, 10, 10]},
            {"image_id": 2, "category_id": 1, "bbox": [0, 0, 10, 10]},
            {"image_id": 2, "category_id": 1, "bbox": [30, 30, 5, 5], "iscrowd": 1}]
    dets = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9},
            {"image_id": 1, "category_id": 1, "bbox": [1, 0, 10, 10], "score": 0.8},   # duplicate (IoU 0.82)
            {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.2},   # below the score
            {"image_id": 1, "category_id": 1, "bbox": [50, 50, 10, 10], "score": 0.9}, # wrong class
            {"image_id": 2, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.7},
            {"image_id": 2, "category_id": 1, "bbox": [5, 0, 10, 10], "score": 0.7}]   # IoU 0.33: not covering
    r = detections_per_gt(anns, dets, score_thresh=0.5)
    assert r == {"dets_per_gt": 1.5, "dup_share": 0.5, "found": 2, "gts": 3}
    r = detections_per_gt(anns, dets, score_thresh=0.1)
    assert r["dets_per_gt"] == 2.0 and r["dup_share"] == 0.5
    assert detections_per_gt(anns, [])["found"] == 0
