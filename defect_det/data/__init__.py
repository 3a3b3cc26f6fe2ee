from . import datasets  # noqa: F401
from .build import build_defect_mapper, check_datasets, needs_paired_mapper, normal_image_files
from .dataset_mapper import DefectDatasetMapper
from .image_io import UnreadableImageError
from .paired_mapper import PairedDatasetMapper, template_usage
from .template_ops import align_template, estimate_translation, sample_misalignment, warp_template

__all__ = [
    "DefectDatasetMapper",
    "PairedDatasetMapper",
    "UnreadableImageError",
    "align_template",
    "build_defect_mapper",
    "check_datasets",
    "needs_paired_mapper",
    "normal_image_files",
    "estimate_translation",
    "sample_misalignment",
    "template_usage",
    "warp_template",
]
