"""Drawing ground truth and predictions of defect detectors (used by ``tools/train_net.py --vis``)."""
import os

import cv2
import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from ..data import build_defect_mapper
from ..data.image_io import read_image

__all__ = ["draw_boxes", "render_prediction", "visualize_dataset_predictions"]

GT_COLOR = (0, 200, 0)  # BGR green
PRED_COLOR = (0, 0, 255)  # BGR red


def draw_boxes(image, boxes, labels=None, color=PRED_COLOR, thickness=1):
    """
    Draw boxes on a copy of ``image``.

    Args:
        image (ndarray): HxWx3 uint8 BGR.
        boxes (ndarray): Nx4 float, XYXY absolute pixels.
        labels (list[str] or None): N captions.
    Returns:
        ndarray: HxWx3 uint8 BGR.
    """
    out = np.ascontiguousarray(image.copy())
    for i, (x0, y0, x1, y1) in enumerate(np.asarray(boxes, dtype=np.float64).reshape(-1, 4)):
        p0, p1 = (int(round(x0)), int(round(y0))), (int(round(x1)), int(round(y1)))
        cv2.rectangle(out, p0, p1, color, thickness)
        if labels:
            cv2.putText(out, labels[i], (p0[0], max(p0[1] - 2, 8)), cv2.FONT_HERSHEY_SIMPLEX,
                        0.3, color, 1, cv2.LINE_AA)
    return out


def render_prediction(dataset_dict, instances, class_names, score_thresh=0.3):
    """
    Side-by-side panel: [image with GT (green) and predictions >= score_thresh (red) | template].

    Args:
        dataset_dict (dict): Detectron2 dataset dict (``file_name``, ``annotations``, optional
            ``template_file_name``).
        instances (Instances): predictions in original image coordinates (``pred_boxes``,
            ``scores``, ``pred_classes``).
    Returns:
        ndarray: H x W' x 3 uint8 BGR (W' = 2W with a template, else W).
    """
    image = read_image(dataset_dict["file_name"], format="BGR")
    gt = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS)
          for a in dataset_dict.get("annotations", [])]
    gt_labels = [class_names[a["category_id"]] for a in dataset_dict.get("annotations", [])]
    panel = draw_boxes(image, np.array(gt).reshape(-1, 4), gt_labels, GT_COLOR)
    keep = instances.scores >= score_thresh
    inst = instances[keep].to("cpu")
    labels = [f"{class_names[c]} {s:.2f}" for c, s in zip(inst.pred_classes.tolist(), inst.scores.tolist())]
    panel = draw_boxes(panel, inst.pred_boxes.tensor.numpy(), labels, PRED_COLOR)
    if "template_file_name" in dataset_dict:
        template = read_image(dataset_dict["template_file_name"], format="BGR", what="template")
        if template.shape == image.shape:
            panel = np.concatenate([panel, template], axis=1)
    return panel


def visualize_dataset_predictions(cfg, model, dataset_name, output_dir, num_images: int = 4,
                                  score_thresh: float = 0.3):
    """
    Run ``model`` (eval mode, Detectron2 inference API, test-time resize of ``cfg``) on the first
    ``num_images`` images of ``dataset_name`` that have ground truth (plus one normal image if any) and
    write PNG panels (see :func:`render_prediction`, predictions above ``score_thresh``) to ``output_dir``.

    Returns:
        list[str]: written PNG paths.
    """
    dicts = DatasetCatalog.get(dataset_name)
    chosen = [d for d in dicts if d.get("annotations")][:num_images]
    chosen += [d for d in dicts if not d.get("annotations")][:1]
    class_names = MetadataCatalog.get(dataset_name).thing_classes
    os.makedirs(output_dir, exist_ok=True)
    was_training = model.training
    model.eval()
    mapper = build_defect_mapper(cfg, False, [dataset_name])
    paths = []
    with torch.no_grad():
        for d in chosen:
            inputs = mapper(dict(d))
            instances = model([inputs])[0]["instances"]
            panel = render_prediction(d, instances, class_names, score_thresh)
            path = os.path.join(output_dir, os.path.splitext(os.path.basename(d["file_name"]))[0] + ".png")
            cv2.imwrite(path, panel)
            paths.append(path)
    model.train(was_training)
    return paths
