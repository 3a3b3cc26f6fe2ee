"""The dataset mapper a defect_det config needs, with its dataset-level checks.

:func:`build_defect_mapper` returns Detectron2's ``DatasetMapper`` for ordinary models, a
:class:`~defect_det.data.PairedDatasetMapper` for ``TemplateRCNN`` and a
:class:`~defect_det.data.segdec_mapper.SegDecDatasetMapper` for ``SegDecNet``. Checks happen here, once, at
data-loader construction rather than deep inside a worker: a template mode that needs a template
per image fails on the first image without one (naming dataset and file), PTG training fails
if the training sets hold no defect-free image, and mask training (``MODEL.MASK_ON`` without
``MODEL.ROI_MASK_HEAD.BOX_SUPERVISED``) fails if an annotation has no ``segmentation`` or RLE masks
meet ``INPUT.MASK_FORMAT: "polygon"``. With ``BOX_SUPERVISED`` no mapper loads masks.
"""
from detectron2.data import DatasetCatalog, DatasetMapper

from .paired_mapper import PairedDatasetMapper, mask_loading_args, template_usage
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


def _check_masks(cfg, dataset_names):
    """Mask training needs a mask on every annotation, in a form INPUT.MASK_FORMAT can read."""
    for name in dataset_names:
        dicts = DatasetCatalog.get(name)
        annos = [(d["file_name"], a) for d in dicts for a in d.get("annotations", []) if not a.get("iscrowd", 0)]
        missing = [f for f, a in annos if not a.get("segmentation")]
        if missing:
            raise ValueError(
                f"dataset {name!r}: {len(missing)} of {len(annos)} annotations have no 'segmentation' "
                f"(first in {missing[0]}), but MODEL.MASK_ON trains the mask head on ground-truth masks. "
                "Set MODEL.ROI_MASK_HEAD.BOX_SUPERVISED True to train it from boxes, or convert masks "
                "for every box (tools/convert_tianchi.py reports masks dropped)."
            )
        rle = next((f for f, a in annos if isinstance(a["segmentation"], dict)), None)
        if rle is not None and cfg.INPUT.MASK_FORMAT != "bitmask":
            raise ValueError(
                f"dataset {name!r}: RLE masks (first in {rle}) need INPUT.MASK_FORMAT 'bitmask', "
                f"got {cfg.INPUT.MASK_FORMAT!r}"
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
    if is_train and cfg.MODEL.MASK_ON and not mask_loading_args(cfg):
        _check_masks(cfg, dataset_names)
    if not needs_paired_mapper(cfg):
        return DatasetMapper(cfg, is_train, **mask_loading_args(cfg))
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
