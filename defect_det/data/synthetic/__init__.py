"""Synthetic data generators that write the on-disk formats of the real defect releases.

Only numpy, OpenCV and the standard library are used (no torch / Detectron2), so the generators can
run before anything else is installed. See :mod:`defect_det.data.synthetic.fabric`.
"""
from .fabric import (
    DEFECT_TYPES,
    PRINTED_FAMILIES,
    TEXTURE_FAMILIES,
    SyntheticFabricConfig,
    format_summary,
    generate_fabric_dataset,
    make_preview,
    misalign_template,
)

__all__ = [
    "DEFECT_TYPES",
    "PRINTED_FAMILIES",
    "TEXTURE_FAMILIES",
    "SyntheticFabricConfig",
    "format_summary",
    "generate_fabric_dataset",
    "make_preview",
    "misalign_template",
]
