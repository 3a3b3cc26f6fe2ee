"""Bootstrap confidence interval of box AP50 over test images (defect_det/evaluation/ap50_bootstrap.py)."""
import contextlib
import io
import math

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from defect_det.config import get_defect_cfg
from defect_det.evaluation import format_summary_table
from defect_det.evaluation.ap50_bootstrap import (
    AP50Matches,
    bootstrap_ap50,
    bootstrap_counts,
    bootstrap_interval,
)
from defect_det.evaluation.coco_ap50 import class_agnostic_ap50


def _synthetic(num_images, num_classes=4, seed=0, perfect=False, normal_frac=0.2, ties=False):
    """
    Random ground truth (0-4 boxes per image, some defect-free images) and detections: jittered
    copies of most boxes (some below IoU 0.5, some with the wrong class), random false positives and
    duplicates. ``ties``: scores rounded to 0.1 so that many are equal across images.

    Returns:
        (COCO, list[dict]): ground truth and COCO-format detections.
    """
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []
    for i in range(1, num_images + 1):
        images.append({"id": i, "width": 200, "height": 200, "file_name": f"{i}.jpg"})
        n = 0 if rng.random() < normal_frac else int(rng.integers(1, 5))
        for _ in range(n):
            w, h = rng.uniform(8, 60, 2)
            x, y = rng.uniform(0, 200 - w), rng.uniform(0, 200 - h)
            c = int(rng.integers(1, num_classes + 1))
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": c, "bbox": [x, y, w, h],
                         "area": w * h, "iscrowd": 0})
            if perfect:
                dets.append({"image_id": i, "category_id": c, "bbox": [x, y, w, h], "score": 0.9})
                continue
            if rng.random() < 0.8:
                jitter = rng.normal(0, 0.15 * min(w, h), 2)  # IoU sometimes < 0.5
                dc = c if rng.random() < 0.85 else int(rng.integers(1, num_classes + 1))
                box = [x + jitter[0], y + jitter[1], w, h]
                dets.append({"image_id": i, "category_id": dc, "bbox": box, "score": float(rng.random())})
                if rng.random() < 0.2:  # duplicate: a false positive at IoU 0.5
                    dets.append({"image_id": i, "category_id": dc, "bbox": box,
                                 "score": float(rng.random())})
        if not perfect:
            for _ in range(int(rng.integers(0, 3))):
                w, h = rng.uniform(8, 60, 2)
                dets.append({"image_id": i, "category_id": int(rng.integers(1, num_classes + 1)),
                             "bbox": [float(rng.uniform(0, 140)), float(rng.uniform(0, 140)), w, h],
                             "score": float(rng.random() * 0.7)})
    if ties:
        for d in dets:
            d["score"] = round(d["score"], 1) + 0.01
    data = {"images": images, "annotations": anns,
            "categories": [{"id": c, "name": f"c{c}"} for c in range(1, num_classes + 1)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = data
        gt.createIndex()
    return gt, dets


def _coco_ap50(gt, dets, max_dets=100):
    """pycocotools' AP50 (class-averaged, area all), in percent."""
    with contextlib.redirect_stdout(io.StringIO()):
        e = COCOeval(gt, gt.loadRes([dict(d) for d in dets]), "bbox")
        e.params.maxDets = [1, 10, max_dets] if max_dets >= 10 else [max_dets] * 3  # stats[1]: maxDets[2]
        e.evaluate()
        e.accumulate()
        e.summarize()
    return float(e.stats[1] * 100)


@pytest.mark.parametrize("seed,ties", [(0, False), (1, False), (2, True)])
def test_point_estimate_is_coco_ap50(seed, ties):
    gt, dets = _synthetic(40, seed=seed, ties=ties)
    expected = _coco_ap50(gt, dets)
    assert 5.0 < expected < 95.0  # a non-trivial case
    ap, low, high = bootstrap_ap50(gt, dets, n_boot=50, seed=0)
    assert ap == pytest.approx(expected, abs=1e-6)
    assert AP50Matches.from_coco(gt, dets).ap50() == pytest.approx(expected, abs=1e-6)

    agnostic = class_agnostic_ap50(gt, dets)
    ap_a, _, _ = bootstrap_ap50(gt, dets, n_boot=50, seed=0, class_agnostic=True)
    assert ap_a == pytest.approx(agnostic, abs=1e-6)
    assert agnostic != pytest.approx(expected, abs=1e-3)  # the two really differ here


def test_point_estimate_respects_max_dets():
    gt, dets = _synthetic(30, num_classes=1, seed=3)  # several detections per image and class
    expected = _coco_ap50(gt, dets, max_dets=2)
    assert expected != pytest.approx(_coco_ap50(gt, dets), abs=1e-3)
    assert bootstrap_ap50(gt, dets, n_boot=10, max_dets=2)[0] == pytest.approx(expected, abs=1e-6)


def test_reweighting_equals_coco_on_the_duplicated_dataset():
    """Weights 2 / 0 on the images equal COCO AP50 on a dataset where those images are copied /
    removed (no tied scores here, so the tie order cannot differ)."""
    gt, dets = _synthetic(20, seed=4)
    counts = np.array([[2 if i % 3 == 0 else (0 if i % 3 == 1 else 1) for i in range(20)]])
    data = gt.dataset
    images, anns, new_dets = [], [], []
    for i, c in enumerate(counts[0]):
        img_id = i + 1
        for copy_k in range(c):
            new_id = img_id * 10 + copy_k
            images.append(dict(data["images"][i], id=new_id))
            anns += [dict(a, image_id=new_id, id=len(anns) + j + 1)
                     for j, a in enumerate(a for a in data["annotations"] if a["image_id"] == img_id)]
            new_dets += [dict(d, image_id=new_id) for d in dets if d["image_id"] == img_id]
    with contextlib.redirect_stdout(io.StringIO()):
        gt2 = COCO()
        gt2.dataset = {"images": images, "annotations": anns, "categories": data["categories"]}
        gt2.createIndex()
    expected = _coco_ap50(gt2, new_dets)
    assert AP50Matches.from_coco(gt, dets).ap50(counts)[0] == pytest.approx(expected, abs=1e-6)


def test_chunked_accumulation_is_identical(monkeypatch):
    """Tiny work-array budget: many replicate chunks and column blocks give the same AP50s."""
    import defect_det.evaluation.ap50_bootstrap as mod

    gt, dets = _synthetic(40, seed=10)
    m = AP50Matches.from_coco(gt, dets, class_agnostic=True)
    counts = bootstrap_counts(m.num_images, 64, seed=0)
    whole = m.ap50(counts)
    monkeypatch.setattr(mod, "_CHUNK_ELEMENTS", 7)
    np.testing.assert_array_equal(m.ap50(counts), whole)
    assert m.ap50() == pytest.approx(class_agnostic_ap50(gt, dets), abs=1e-6)


def test_interval_contains_point_and_shrinks_with_more_images():
    widths = []
    for n in (30, 120, 480):
        gt, dets = _synthetic(n, seed=5)
        ap, low, high = bootstrap_ap50(gt, dets, n_boot=300, seed=0)
        assert low <= ap <= high
        assert 0.0 <= low < high <= 100.0
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2]
    assert widths[2] < 0.6 * widths[0]  # ~ 1 / sqrt(n): 16x the images, about 1/4 of the width


def test_deterministic_by_seed():
    gt, dets = _synthetic(60, seed=6)
    a = bootstrap_ap50(gt, dets, n_boot=200, seed=7)
    assert bootstrap_ap50(gt, dets, n_boot=200, seed=7) == a
    assert bootstrap_ap50(gt, dets, n_boot=200, seed=8) != a
    np.testing.assert_array_equal(bootstrap_counts(60, 5, seed=7), bootstrap_counts(60, 5, seed=7))


def test_bootstrap_counts_resample_images_with_replacement():
    counts = bootstrap_counts(50, 400, seed=0)
    assert counts.shape == (400, 50)
    assert (counts.sum(axis=1) == 50).all()
    assert (counts.max(axis=1) >= 2).all()  # some image drawn twice in every replicate
    # each image is drawn once per replicate on average
    assert counts.mean() == pytest.approx(1.0)


def test_perfect_detector_interval_is_100():
    gt, dets = _synthetic(50, seed=8, perfect=True)
    assert bootstrap_ap50(gt, dets, n_boot=200) == (100.0, 100.0, 100.0)
    assert bootstrap_ap50(gt, dets, n_boot=200, class_agnostic=True) == (100.0, 100.0, 100.0)


def test_classes_without_ground_truth_in_a_replicate_are_left_out():
    """Class 1 exists on image 1 only (found), class 2 on image 2 only (missed): a replicate that
    draws only image 1 has AP50 100, only image 2 has 0, both 50 — never a mean with an absent class."""
    box = [10.0, 10.0, 20.0, 20.0]
    data = {"images": [{"id": 1, "width": 64, "height": 64}, {"id": 2, "width": 64, "height": 64}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": box, "area": 400.0, "iscrowd": 0},
                            {"id": 2, "image_id": 2, "category_id": 2, "bbox": box, "area": 400.0, "iscrowd": 0}],
            "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = data
        gt.createIndex()
    dets = [{"image_id": 1, "category_id": 1, "bbox": box, "score": 0.9}]
    m = AP50Matches.from_coco(gt, dets)
    np.testing.assert_allclose(m.ap50(np.array([[2, 0], [0, 2], [1, 1]])), [100.0, 0.0, 50.0])
    ap, low, high = bootstrap_interval(m, n_boot=200, seed=0)
    assert ap == pytest.approx(50.0) and low == pytest.approx(0.0) and high == pytest.approx(100.0)


def test_no_detections_and_no_ground_truth():
    gt, dets = _synthetic(20, seed=9)
    assert bootstrap_ap50(gt, [], n_boot=20) == (0.0, 0.0, 0.0)
    assert bootstrap_ap50(gt, [], n_boot=20, class_agnostic=True) == (0.0, 0.0, 0.0)
    empty, _ = _synthetic(10, seed=9, normal_frac=1.0)
    for agnostic in (False, True):
        assert all(math.isnan(v) for v in bootstrap_ap50(empty, dets[:0], n_boot=20, class_agnostic=agnostic))


def test_config_key_and_summary_table_format():
    cfg = get_defect_cfg()
    assert cfg.TEST.BOOTSTRAP_ITERS == 1000 and cfg.TEST.BOOTSTRAP_SEED == 0
    box = {"AP50": 41.27, "AP": 20.0, "AP75": 15.0, "AP50_agnostic": 50.0,
           "AP50_ci_low": 36.02, "AP50_ci_high": 46.91}
    table = format_summary_table({"ds": {"bbox": box}})
    assert "41.3 [36.0, 46.9]" in table
    assert "| 50.0 " in table  # no interval for the agnostic AP50 here: the number alone
    box.update(AP50_agnostic_ci_low=45.0, AP50_agnostic_ci_high=55.5)
    assert "50.0 [45.0, 55.5]" in format_summary_table({"ds": {"bbox": box}})
