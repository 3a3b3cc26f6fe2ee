"""The command line of ``tools/predict.py``: a folder of images through a trained model (issue 15)."""
import argparse
import os
from typing import Optional, Sequence

from .folder import find_images, pair_templates, predict_folder

__all__ = ["get_parser", "main"]


def get_parser(description: Optional[str] = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, metavar="FILE", help="the model's config")
    p.add_argument("--input", nargs="+", required=True, help="image files, folders or glob patterns")
    p.add_argument("--templates", default=None, metavar="DIR",
                   help="folder of the templates (Tianchi rule: template_<prefix>.<ext>; default: beside each image)")
    p.add_argument("--pairs", default=None, metavar="CSV", help="image,template per line (instead of the rule)")
    p.add_argument("--output", required=True, metavar="DIR", help="predictions.json, decisions.csv, panels/, report.html")
    p.add_argument("--score-thresh", type=float, default=0.5,
                   help="an image is NG when a detection (SegDecNet: the image score) reaches this (default: %(default)s)")
    p.add_argument("--thresholds", default=None, metavar="JSON",
                   help="thresholds.json of tools/calibrate.py: its OK/NG threshold and per-class thresholds "
                        "replace --score-thresh")
    p.add_argument("--batch-size", type=int, default=4, help="images (tiles) per forward (default: %(default)s)")
    p.add_argument("--tile", type=int, default=0, metavar="SIZE",
                   help="cut each image (and template) into SIZE x SIZE windows, each at the model's test scale, "
                        "and merge the detections (defect_det/inference/tiling.py); 0: whole image (default)")
    p.add_argument("--overlap", type=float, default=0.2, help="--tile: overlap of neighbouring windows (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides, e.g. MODEL.WEIGHTS model.pth")
    return p


def _class_names(cfg):
    from detectron2.data import MetadataCatalog

    for name in list(cfg.DATASETS.TEST) + list(cfg.DATASETS.TRAIN):
        try:
            names = MetadataCatalog.get(name).get("thing_classes")
        except KeyError:
            names = None
        if names:
            return list(names)
    return [str(i) for i in range(cfg.MODEL.ROI_HEADS.NUM_CLASSES)]


def main(argv: Optional[Sequence[str]] = None, description: Optional[str] = None):
    """Parse ``argv``, check the inputs before loading the model, run, and print where the outputs are."""
    args = get_parser(description).parse_args(argv)
    import defect_det  # noqa: F401  (registers everything)
    from ..config import load_defect_cfg
    from .predictor import DefectPredictor

    class_thresh, score_thresh = None, args.score_thresh
    if args.thresholds:
        from .calibrate import load_thresholds

        th = load_thresholds(args.thresholds)
        score_thresh, class_thresh = th["image"], th["classes"]
    images = find_images(args.input)
    templates = pair_templates(images, args.templates, args.pairs)
    cfg = load_defect_cfg(args.config_file, args.opts)
    if not cfg.MODEL.WEIGHTS:
        raise SystemExit("error: MODEL.WEIGHTS is empty: give the trained model (trailing MODEL.WEIGHTS model.pth)")
    if cfg.MODEL.META_ARCHITECTURE == "TemplateRCNN" and cfg.MODEL.TEMPLATE.MODE in ("pre", "inter"):
        missing = [im for im, t in templates.items() if t is None]
        if missing:
            raise SystemExit(f"error: MODEL.TEMPLATE.MODE {cfg.MODEL.TEMPLATE.MODE!r} needs a template per image; "
                             f"{len(missing)} of {len(images)} have none (first: {missing[0]}); "
                             "give --templates DIR or --pairs CSV")
    predictor = DefectPredictor(cfg)
    if args.tile:
        from .tiling import TiledPredictor

        if cfg.MODEL.META_ARCHITECTURE == "SegDecNet":
            raise SystemExit("error: --tile is for detectors; SegDecNet resizes to MODEL.SEGDEC.INPUT_SIZE")
        predictor = TiledPredictor(predictor, args.tile, args.overlap, cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST,
                                   args.batch_size)
    rows = predict_folder(predictor, images, templates, args.output, _class_names(cfg), score_thresh,
                          args.batch_size, args.config_file, cfg.MODEL.WEIGHTS, not args.no_progress, class_thresh)
    ng = sum(r["decision"] == "NG" for r in rows)
    print(f"[predict] {len(rows)} images, {ng} NG -> {os.path.join(args.output, 'report.html')}")
    return rows
