from . import datasets  # noqa: F401
from .build import build_defect_mapper, needs_paired_mapper, normal_image_files
from .paired_mapper import PairedDatasetMapper, template_usage
from .template_ops import align_template, estimate_translation, sample_misalignment, warp_template

__all__ = [
    "PairedDatasetMapper",
    "align_template",
    "build_defect_mapper",
    "needs_paired_mapper",
    "normal_image_files",
    "estimate_translation",
    "sample_misalignment",
    "template_usage",
    "warp_template",
]
