"""The dataset mapper a defect_det config needs, with its dataset-level checks.

:func:`build_defect_mapper` returns Detectron2's ``DatasetMapper`` for ordinary models, a
:class:`~defect_det.rddn.PairedDatasetMapper` for ``TemplateRCNN`` and a
:class:`~defect_det.segdec.SegDecDatasetMapper` for ``SegDecNet``. Checks happen here, once, at
data-loader construction rather than deep inside a worker: a template mode that needs a template
per image fails on the first image without one (naming dataset and file), PTG training fails
if the training sets hold no defect-free image, and mask training (``MODEL.MASK_ON`` without
``MODEL.ROI_MASK_HEAD.BOX_SUPERVISED``) fails if an annotation has no ``segmentation`` or RLE masks
meet ``INPUT.MASK_FORMAT: "polygon"``. With ``BOX_SUPERVISED`` no mapper loads masks. When the
model reads templates, every template's size (from its header, once) must equal its image's size
in the dataset dict (the json), so that a bad pair stops here, not at a random iteration. Every
mapper names the file it cannot read (:mod:`defect_det.data.image_io`).

:func:`check_datasets` is the check ``tools/train_net.py`` runs before the first iteration: every
dataset name is registered and loads, and every file its dicts name exists.
"""
import os

from detectron2.data import DatasetCatalog

from .dataset_mapper import DefectDatasetMapper
from .image_io import UnreadableImageError, image_size
from ..rddn.mapper import PairedDatasetMapper, mask_loading_args, template_usage
from ..segdec.mapper import SegDecDatasetMapper, select_segmented_files

__all__ = ["build_defect_mapper", "check_datasets", "needs_paired_mapper", "normal_image_files"]

# dataset-dict keys that name files a mapper reads
FILE_KEYS = ("file_name", "template_file_name", "sem_seg_file_name")


def needs_paired_mapper(cfg) -> bool:
    """TemplateRCNN, or any detector trained with ``INPUT.DEFECT_CROP`` (the crop needs the boxes, which
    Detectron2's ``DatasetMapper`` does not hand to its augmentations; with no template in use
    ``PairedDatasetMapper`` maps as ``DatasetMapper`` does)."""
    return cfg.MODEL.META_ARCHITECTURE == "TemplateRCNN" or bool(cfg.INPUT.DEFECT_CROP.ENABLED)


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


def _check_template_sizes(dataset_names):
    """Every template's size (its header, read once per file) equals its image's ``width`` x
    ``height`` in the dataset dict; an error names the dataset, the count and the first pair."""
    sizes = {}
    for name in dataset_names:
        dicts = DatasetCatalog.get(name)
        bad, n = [], 0
        for d in dicts:
            path = d.get("template_file_name")
            if not path:
                continue
            n += 1
            if path not in sizes:
                try:
                    sizes[path] = image_size(path)
                except Exception as e:  # noqa: BLE001  (PIL raises OSError, SyntaxError, ...)
                    err = e if os.path.exists(path) else FileNotFoundError(f"no such file: {path}")
                    raise UnreadableImageError.of(path, err, f"template (of {d['file_name']}, dataset {name!r})") from e
            if "width" in d and "height" in d and sizes[path] != (int(d["width"]), int(d["height"])):
                bad.append((d, sizes[path]))
        if bad:
            d, (tw, th) = bad[0]
            raise ValueError(
                f"dataset {name!r}: {len(bad)} of {n} templates differ in size from their image (first: "
                f"template {d['template_file_name']} is {tw}x{th} (WxH) but image {d['file_name']} is "
                f"{d['width']}x{d['height']}). The template methods need them equal: replace the templates, "
                "or re-convert with tools/convert_tianchi.py (--strict stops at such a pair, --lenient drops it)"
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
        a callable dataset mapper: :class:`~defect_det.data.dataset_mapper.DefectDatasetMapper`
        (Detectron2's ``DatasetMapper`` whose read errors name the file), ``PairedDatasetMapper``
        or ``SegDecDatasetMapper``.
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
        return DefectDatasetMapper(cfg, is_train, **mask_loading_args(cfg))
    usage, needs_normals = template_usage(cfg, is_train)
    if usage == "required":
        _check_templates(cfg, dataset_names)
    if usage != "unused":
        _check_template_sizes(dataset_names)
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


def check_datasets(dataset_names, key="DATASETS"):
    """
    Check datasets before anything trains: every name is registered, loads and is not empty, and
    every file its dicts name (``file_name``, ``template_file_name``, ``sem_seg_file_name``) exists
    (one ``stat`` per file; nothing is decoded).

    Args:
        dataset_names (iterable[str]): e.g. ``cfg.DATASETS.TRAIN``.
        key (str): the config key they come from, named in the errors.
    Returns:
        dict: dataset name -> number of files checked.
    Raises:
        KeyError: a name is not registered (the message lists the registered names).
        ValueError: a dataset is empty, or files are missing (count and first missing path).
        RuntimeError: its loader raised (the original error chained, its message included).
    """
    checked = {}
    for name in dataset_names:
        if name not in DatasetCatalog.list():
            known = ", ".join(sorted(DatasetCatalog.list()))
            raise KeyError(
                f"{key}: dataset {name!r} is not registered. Fix the name, or register it before the "
                f"trainer is built (e.g. defect_det.data.datasets.register_tianchi_fabric). Registered: {known}"
            )
        try:
            dicts = DatasetCatalog.get(name)
        except Exception as e:
            raise RuntimeError(f"{key}: dataset {name!r} does not load ({type(e).__name__}: {e}). Check the "
                               "file it was registered with (and DETECTRON2_DATASETS)") from e
        if not dicts:
            raise ValueError(f"{key}: dataset {name!r} has no image; check its json (or its folder)")
        paths = {d[k] for d in dicts for k in FILE_KEYS if d.get(k)}
        missing = sorted(p for p in paths if not os.path.isfile(p))
        if missing:
            raise ValueError(
                f"{key}: dataset {name!r}: {len(missing)} of {len(paths)} files named by its {len(dicts)} "
                f"images are missing (first: {missing[0]}). Check DETECTRON2_DATASETS and the image root "
                "the dataset was registered with, or re-convert the data"
            )
        checked[name] = len(paths)
    return checked
