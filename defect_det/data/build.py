"""The dataset mapper a defect_det config needs, with its dataset-level checks.

:func:`build_defect_mapper` returns Detectron2's ``DatasetMapper`` for ordinary models, a
:class:`~defect_det.data.PairedDatasetMapper` for ``TemplateRCNN`` and a
:class:`~defect_det.data.segdec_mapper.SegDecDatasetMapper` for ``SegDecNet``. Checks happen here, once, at
data-loader construction rather than deep inside a worker: a template mode that needs a template
per image fails on the first image without one (naming dataset and file), and PTG training fails
if the training sets hold no defect-free image.
"""
from detectron2.data import DatasetCatalog, DatasetMapper

from .paired_mapper import PairedDatasetMapper, template_usage
from .segdec_mapper import SegDecDatasetMapper, select_segmented_files

__all__ = ["build_defect_mapper", "needs_paired_mapper", "normal_image_files"]


def needs_paired_mapper(cfg) -> bool:
    return cfg.MODEL.META_ARCHITECTURE == "TemplateRCNN"


def normal_image_files(dataset_names):
    """File names of the defect-free images (``is_normal`` or no annotations) of the datasets."""
    files = []
    for name in dataset_names:
        for d in DatasetCatalog.get(name):
            if d.get("is_normal", False) or not d.get("annotations"):
                files.append(d["file_name"])
    return files


def _check_templates(cfg, dataset_names):
    for name in dataset_names:
        dicts = DatasetCatalog.get(name)
        missing = [d["file_name"] for d in dicts if not d.get("template_file_name")]
        if missing:
            raise ValueError(
                f"dataset {name!r}: {len(missing)} of {len(dicts)} images have no template "
                f"(first: {missing[0]}), but MODEL.TEMPLATE.MODE={cfg.MODEL.TEMPLATE.MODE!r} needs one "
                "per image. Use MODE 'none' / 'ptg' (or POST, which skips images without one)."
            )


def build_defect_mapper(cfg, is_train: bool, dataset_names=()):
    """
    Args:
        dataset_names: the datasets the loader will read (``DATASETS.TRAIN`` for training, the
            one test set for testing); used only for the checks and PTG's normal-image pool.
    Returns:
        a callable dataset mapper.
    """
    if cfg.MODEL.META_ARCHITECTURE == "SegDecNet":
        segmented = None
        if is_train:  # mixed supervision: the first NUM_SEGMENTED defective images keep pixel labels
            dicts = [d for name in dataset_names for d in DatasetCatalog.get(name)]
            segmented = select_segmented_files(dicts, cfg.MODEL.SEGDEC.NUM_SEGMENTED)
        return SegDecDatasetMapper(cfg, is_train, segmented_files=segmented)
    if not needs_paired_mapper(cfg):
        return DatasetMapper(cfg, is_train)
    usage, needs_normals = template_usage(cfg, is_train)
    if usage == "required":
        _check_templates(cfg, dataset_names)
    pool = None
    if needs_normals:
        pool = normal_image_files(dataset_names)
        if not pool:
            raise ValueError(
                f"MODEL.TEMPLATE.MODE='ptg' trains its generators on defect-free images, but the "
                f"training datasets {tuple(dataset_names)} have none (images with is_normal or "
                "without annotations)"
            )
    return PairedDatasetMapper(cfg, is_train, normal_pool=pool)
