"""Large images by tiling (issue 15): real Tianchi images are 2446x1000 (fabric) and 2560x1920 (aluminum) with
defects of a few pixels, which resizing the whole image to the training scale would erase.

:class:`TiledPredictor` cuts the image — and its template, with the same crops — into ``tile`` x ``tile``
windows overlapping by ``overlap`` (a fraction of the tile), runs a :class:`~defect_det.inference.DefectPredictor`
on the windows in batches (each at the model's own test-time scale), moves every detection back to image
coordinates and merges them:

1. per-class NMS at ``nms_thresh`` over all windows (duplicates of a defect seen whole by two windows);
2. a detection that touches a window border inside the image (within ``border`` px) was cut by it: it is
   merged with every same-class detection of another window that it overlaps or touches, into their
   bounding box with the higher score, until nothing merges — so a defect longer than a window becomes one
   box, not two.

Outputs are those of the predictor (``{"instances": Instances}`` in the full image's coordinates). Detectors
only (SegDecNet has its own input size).
"""
import math
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.structures import Boxes, Instances
from torchvision.ops import batched_nms

__all__ = ["TiledPredictor", "merge_tiled_detections", "tile_windows"]


def tile_windows(height: int, width: int, tile: int, overlap: float) -> List[Tuple[int, int, int, int]]:
    """Windows ``(x0, y0, x1, y1)`` of at most ``tile`` px covering the image, neighbours overlapping by
    ``overlap * tile`` px (the last window of a row / column is aligned with the image border)."""
    if tile < 8:
        raise ValueError(f"--tile must be >= 8 px, got {tile}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"--overlap must be in [0, 1), got {overlap}")
    stride = max(1, int(round(tile * (1.0 - overlap))))

    def starts(n):
        if n <= tile:
            return [0]
        k = math.ceil((n - tile) / stride) + 1
        return sorted({min(i * stride, n - tile) for i in range(k)})

    return [(x, y, min(x + tile, width), min(y + tile, height)) for y in starts(height) for x in starts(width)]


def merge_tiled_detections(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor,
                           windows: torch.Tensor, image_size: Tuple[int, int], nms_thresh: float = 0.5,
                           border: float = 2.0) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """
    Merge the detections of overlapping windows (module doc).

    Args:
        boxes: (n, 4) XYXY in image coordinates; scores (n,); classes (n,).
        windows: (n, 4) XYXY the window each detection comes from.
        image_size: (height, width).
    Returns:
        boxes, scores, classes after the merge, in decreasing score.
    """
    if len(boxes) == 0:
        return boxes, scores, classes
    keep = batched_nms(boxes, scores, classes, nms_thresh)
    boxes, scores, classes, windows = boxes[keep], scores[keep], classes[keep], windows[keep]
    h, w = image_size
    inner = torch.stack([windows[:, 0] > 0, windows[:, 1] > 0, windows[:, 2] < w, windows[:, 3] < h], 1)
    touch = torch.stack([boxes[:, 0] <= windows[:, 0] + border, boxes[:, 1] <= windows[:, 1] + border,
                         boxes[:, 2] >= windows[:, 2] - border, boxes[:, 3] >= windows[:, 3] - border], 1)
    cut = (inner & touch).any(1)
    items = [[boxes[i].clone(), float(scores[i]), int(classes[i]), bool(cut[i]), {tuple(windows[i].tolist())}]
             for i in range(len(boxes))]
    merged = True
    while merged:
        merged = False
        for i in range(len(items)):
            for j in range(i + 1, len(items)):
                a, b = items[i], items[j]
                if a is None or b is None or a[2] != b[2] or not (a[3] or b[3]) or a[4] & b[4] == a[4] | b[4]:
                    continue
                bi, bj = a[0], b[0]
                if bi[0] > bj[2] + border or bj[0] > bi[2] + border or bi[1] > bj[3] + border or bj[1] > bi[3] + border:
                    continue  # neither overlapping nor touching
                union = torch.stack([torch.minimum(bi[:2], bj[:2]), torch.maximum(bi[2:], bj[2:])]).reshape(4)
                items[i] = [union, max(a[1], b[1]), a[2], a[3] or b[3], a[4] | b[4]]
                items[j] = None
                merged = True
    items = sorted((x for x in items if x is not None), key=lambda x: -x[1])
    return (torch.stack([x[0] for x in items]), torch.tensor([x[1] for x in items], dtype=scores.dtype),
            torch.tensor([x[2] for x in items], dtype=classes.dtype))


class TiledPredictor:
    """Tiled inference with a :class:`~defect_det.inference.DefectPredictor` (module doc)::

        tiled = TiledPredictor(DefectPredictor(cfg), tile=512, overlap=0.2)
        out = tiled(image_bgr, template_bgr)        # {"instances": ...} in full-image coordinates
    """

    def __init__(self, predictor, tile: int = 512, overlap: float = 0.2, nms_thresh: float = 0.5,
                 batch_size: int = 4, border: float = 2.0):
        tile_windows(tile, tile, tile, overlap)  # validates
        self.predictor, self.tile, self.overlap = predictor, int(tile), float(overlap)
        self.nms_thresh, self.batch_size, self.border = float(nms_thresh), int(batch_size), float(border)

    def __call__(self, images, templates=None):
        """One image (BGR array or path) and its template (or None) -> one output; lists -> a list (each image
        tiled on its own), as :class:`~defect_det.inference.DefectPredictor`."""
        if isinstance(images, (list, tuple)):
            templates = templates if templates is not None else [None] * len(images)
            return [self.predict_one(im, t) for im, t in zip(images, templates)]
        return self.predict_one(images, templates)

    @torch.no_grad()
    def predict_one(self, image, template=None) -> dict:
        """``image`` (H, W, C) BGR array (a path is read as BGR), ``template`` likewise or None."""
        from ..data.image_io import read_image

        if isinstance(image, str):
            image = read_image(image, format="BGR")
        if isinstance(template, str):
            template = read_image(template, format="BGR", what="template")
        if template is not None and template.shape != image.shape:
            raise ValueError(f"template shape {template.shape} != image shape {image.shape}: templates must match")
        h, w = image.shape[:2]
        windows = tile_windows(h, w, self.tile, self.overlap)
        all_boxes, all_scores, all_classes, all_windows = [], [], [], []
        for k in range(0, len(windows), self.batch_size):
            batch = windows[k:k + self.batch_size]
            crops = [np.ascontiguousarray(image[y0:y1, x0:x1]) for x0, y0, x1, y1 in batch]
            tcrops = ([np.ascontiguousarray(template[y0:y1, x0:x1]) for x0, y0, x1, y1 in batch]
                      if template is not None else None)
            for (x0, y0, x1, y1), out in zip(batch, self.predictor(crops, tcrops)):
                inst = out["instances"].to("cpu")
                b = inst.pred_boxes.tensor + torch.tensor([x0, y0, x0, y0], dtype=torch.float32)
                all_boxes.append(b)
                all_scores.append(inst.scores)
                all_classes.append(inst.pred_classes)
                all_windows.append(torch.tensor([[x0, y0, x1, y1]], dtype=torch.float32).expand(len(b), 4))
        boxes, scores = torch.cat(all_boxes), torch.cat(all_scores)
        classes, wins = torch.cat(all_classes), torch.cat(all_windows)
        boxes, scores, classes = merge_tiled_detections(boxes, scores, classes, wins, (h, w), self.nms_thresh,
                                                        self.border)
        inst = Instances((h, w))
        inst.pred_boxes, inst.scores, inst.pred_classes = Boxes(boxes.reshape(-1, 4)), scores, classes
        return {"instances": inst}
