"""Loading and registering the COCO export of the Tianchi defect datasets.

``tools/convert_tianchi.py`` writes COCO JSON whose image entries carry two fields Detectron2's
``load_coco_json`` does not keep: ``template_file_name`` (fabric: the production-line template of the
image) and ``is_normal`` (a defect-free image). :func:`load_tianchi_json` wraps ``load_coco_json`` and
adds them to every dataset dict:

- ``template_file_name`` (str, absolute or relative to the CWD like ``file_name``; absent if none)
- ``is_normal`` (bool)

An annotation's optional ``segmentation`` (COCO RLE ``{"size": [h, w], "counts": str}`` or polygons,
as the converter writes it for the synthetic fabric data) is kept by ``load_coco_json`` itself and
becomes ``instances.gt_masks`` in the mappers when ``MODEL.MASK_ON`` (RLE needs
``INPUT.MASK_FORMAT: "bitmask"``).
"""
import json
import logging
import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.coco import load_coco_json
from detectron2.utils.file_io import PathManager

from .tianchi_categories import category_names

__all__ = ["load_tianchi_json", "register_tianchi_fabric", "register_tianchi_aluminum"]

logger = logging.getLogger(__name__)


def _read_image_extras(json_file):
    with PathManager.open(json_file, "r", encoding="utf-8") as f:
        try:
            coco = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{json_file}: not valid JSON ({e})") from e
    if not isinstance(coco, dict) or "images" not in coco:
        raise ValueError(f"{json_file}: not a COCO file (no 'images' list)")
    return {
        img["id"]: (img.get("template_file_name"), bool(img.get("is_normal", False)))
        for img in coco["images"]
    }


def load_tianchi_json(json_file, image_root, dataset_name=None, require_templates=False):
    """
    Load a COCO file written by ``tools/convert_tianchi.py`` into Detectron2 dataset dicts.

    Args:
        json_file (str): the COCO json.
        image_root (str): directory that ``file_name`` and ``template_file_name`` are relative to.
        dataset_name (str or None): if given, its metadata (thing_classes, id mapping) is filled.
        require_templates (bool): raise if an image has no ``template_file_name``.

    Returns:
        list[dict]: Detectron2 standard dataset dicts, plus ``template_file_name`` / ``is_normal``;
        annotations keep ``segmentation`` where the file has one.
    """
    dicts = load_coco_json(json_file, image_root, dataset_name)
    extras = _read_image_extras(json_file)
    missing = 0
    for d in dicts:
        template, is_normal = extras[d["image_id"]]
        d["is_normal"] = is_normal
        if template:
            d["template_file_name"] = os.path.join(image_root, template)
        else:
            missing += 1
    if missing and require_templates:
        raise ValueError(
            f"{json_file}: {missing} of {len(dicts)} images have no 'template_file_name' "
            "(was it converted with tools/convert_tianchi.py fabric?)"
        )
    return dicts


def _register(name, json_file, image_root, dataset, require_templates):
    DatasetCatalog.register(
        name, lambda: load_tianchi_json(json_file, image_root, name, require_templates)
    )
    MetadataCatalog.get(name).set(
        json_file=json_file,
        image_root=image_root,
        evaluator_type="coco",
        thing_classes=category_names(dataset),
        has_templates=require_templates,
        defect_dataset=dataset,
    )


def register_tianchi_fabric(name, json_file, image_root):
    """Register a Tianchi-fabric COCO export (15 classes, every image has a template)."""
    _register(name, json_file, image_root, "fabric", require_templates=True)


def register_tianchi_aluminum(name, json_file, image_root):
    """Register a Tianchi-aluminum COCO export (10 classes, no templates)."""
    _register(name, json_file, image_root, "aluminum", require_templates=False)
