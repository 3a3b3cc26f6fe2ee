"""Tiled inference (defect_det/inference/tiling.py): windows cover the image, a defect cut by window borders
comes back as one box, a defect seen whole by two windows as one, far-apart same-class defects stay apart."""
import numpy as np
import pytest
import torch
from detectron2.structures import Boxes, Instances

from defect_det.inference.tiling import TiledPredictor, merge_tiled_detections, tile_windows


def test_windows_cover_the_image_with_overlap():
    wins = tile_windows(100, 300, 128, 0.25)
    assert wins[0] == (0, 0, 128, 100) and wins[-1] == (172, 0, 300, 100)
    covered = np.zeros((100, 300), bool)
    for x0, y0, x1, y1 in wins:
        covered[y0:y1, x0:x1] = True
        assert x1 - x0 <= 128 and y1 - y0 <= 128
    assert covered.all()
    assert tile_windows(50, 60, 128, 0.2) == [(0, 0, 60, 50)]
    with pytest.raises(ValueError, match="overlap"):
        tile_windows(100, 100, 64, 1.0)


class _FakePredictor:
    """Returns, for every crop, the part of each true box inside it (class, score 0.9), like a perfect
    detector that sees only its window. The crops are recognised by their content: pixel (0, 0) holds x0."""

    def __init__(self, truth):
        self.truth = truth  # list of (XYXY, class)

    def __call__(self, crops, templates=None):
        outs = []
        for c in crops:
            x0, y0 = int(c[0, 0, 0]) * 4, int(c[0, 0, 1]) * 4
            h, w = c.shape[:2]
            boxes, classes = [], []
            for (a, b, p, q), k in self.truth:
                box = [max(a, x0) - x0, max(b, y0) - y0, min(p, x0 + w) - x0, min(q, y0 + h) - y0]
                if box[2] > box[0] and box[3] > box[1]:
                    boxes.append(box)
                    classes.append(k)
            inst = Instances((h, w))
            inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
            inst.scores = torch.full((len(boxes),), 0.9)
            inst.pred_classes = torch.tensor(classes, dtype=torch.long)
            outs.append({"instances": inst})
        return outs


def _image(h, w):
    """Each pixel stores (x // 4, y // 4) so that a crop knows where it came from."""
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = (np.arange(w) // 4)[None, :]
    img[..., 1] = (np.arange(h) // 4)[:, None]
    return img


def test_cut_defect_becomes_one_box_and_duplicates_one():
    truth = [((8.0, 40.0, 292.0, 52.0), 0),      # a seam across every window
             ((100.0, 60.0, 112.0, 72.0), 1),    # inside the overlap of two windows: seen whole twice
             ((20.0, 80.0, 28.0, 88.0), 0), ((260.0, 80.0, 268.0, 88.0), 0)]  # far apart: stay two
    tiled = TiledPredictor(_FakePredictor(truth), tile=128, overlap=0.25, batch_size=2)
    inst = tiled(_image(100, 300))["instances"]
    got = sorted((tuple(round(v) for v in b.tolist()), int(c)) for b, c in zip(inst.pred_boxes.tensor, inst.pred_classes))
    want = sorted((tuple(int(v) for v in b), k) for b, k in truth)
    assert got == want
    assert inst.image_size == (100, 300)


def test_merge_leaves_single_window_detections_alone():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [12.0, 0.0, 20.0, 10.0]])
    wins = torch.tensor([[0.0, 0.0, 64.0, 64.0]] * 2)
    b, s, c = merge_tiled_detections(boxes, torch.tensor([0.9, 0.8]), torch.tensor([0, 0]), wins, (64, 64))
    assert len(b) == 2  # same window (no cut): two defects
