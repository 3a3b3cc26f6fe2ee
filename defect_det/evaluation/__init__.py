from .build import EVALUATOR_REGISTRY, build_defect_evaluator
from .image_level import ImageLevelEvaluator, PixelLevelEvaluator, SegDecEvaluator  # SegDecNet
from .ap50_bootstrap import AP50Matches, bootstrap_ap50, bootstrap_counts, bootstrap_interval
from .coco_ap50 import (
    DefectCOCOEvaluator,
    format_ap50_table,
    format_summary_table,
    normalize_test_results,
    per_category_ap50,
)

__all__ = [k for k in globals().keys() if not k.startswith("_")]
