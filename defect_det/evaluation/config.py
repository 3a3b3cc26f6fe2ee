"""defect_det's evaluation keys (``TEST.*``)."""

__all__ = ["add_evaluation_config"]


def add_evaluation_config(cfg):
    """Evaluation keys (``cfg.TEST.*``)."""
    # Name in defect_det.evaluation.EVALUATOR_REGISTRY of the evaluator DefectTrainer builds for
    # every dataset in DATASETS.TEST. "DefectCOCOEvaluator" = Detectron2's COCOEvaluator (bbox)
    # plus per-category AP50 (the RDDN paper's headline metric is mAP@0.5).
    cfg.TEST.EVALUATOR = "DefectCOCOEvaluator"
    # DefectCOCOEvaluator: replicates of the 95% bootstrap interval over test images of box AP50 and
    # class-agnostic AP50 (AP50_ci_low/high, AP50_agnostic_ci_low/high); 0 = no interval.
    cfg.TEST.BOOTSTRAP_ITERS = 1000
    # Seed of the bootstrap image draws (fixed, so the interval is reproducible).
    cfg.TEST.BOOTSTRAP_SEED = 0
    # DefectCOCOEvaluator's duplicate metrics (dets_per_gt, dup_share): detections scored at least this count.
    cfg.TEST.DUPLICATE_SCORE = 0.5
