"""Shared data: dataset registration (``datasets/``), converters, synthetic generators, image I/O, template
registration ops, and :func:`build_defect_mapper` (the mapper a config needs: Detectron2's, RDDN's paired
mapper or SegDecNet's)."""
from . import datasets  # noqa: F401
from .build import build_defect_mapper, check_datasets, needs_paired_mapper, normal_image_files
from .dataset_mapper import DefectDatasetMapper
from .image_io import UnreadableImageError
from .template_ops import align_template, estimate_translation, sample_misalignment, warp_template

__all__ = [
    "DefectDatasetMapper",
    "UnreadableImageError",
    "align_template",
    "build_defect_mapper",
    "check_datasets",
    "needs_paired_mapper",
    "normal_image_files",
    "estimate_translation",
    "sample_misalignment",
    "warp_template",
]
