"""Reader of the Tianchi 2019 fabric (round 2) release: images with their templates under ``defect/`` and
``normal/``, boxes (and optional masks) from ``Annotations/*.json`` lists; :func:`convert_fabric`."""
import json
import os

from .common import _category_lookup, _is_image, _load_json, _prepare_roots, _try_size, _walk_files
from .report import TianchiFormatError, _describe, _Log, _new_report
from .segmentation import _check_segmentation, _number
from .writer import _finish

__all__ = ["convert_fabric"]


def _fabric_template(img_path):
    d, fname = os.path.split(img_path)
    stem, ext = os.path.splitext(fname)
    prefix = stem.split("_")[0]
    for e in [ext] + [x for x in (".jpg", ".jpeg", ".png", ".bmp", ".JPG", ".JPEG", ".PNG") if x != ext]:
        p = os.path.join(d, f"template_{prefix}{e}")
        if os.path.isfile(p):
            return p
    return None


def _read_fabric_entry(entry, i, afile, index, stems, roots, lookup, log):
    """
    Validate entry ``i`` of annotation file ``afile`` and add its box (and mask) to its image's
    ``raw_boxes``. Returns True if added, False if the box was dropped (counted; raises if strict).
    """
    if not isinstance(entry, dict):
        log.problem("not_an_object", afile, f"expected an object, got {type(entry).__name__}", i)
        return False
    name = entry.get("name")
    missing = [k for k in ("name", "defect_name", "bbox") if k not in entry]
    if missing:
        log.problem("missing_key", afile, f"missing key(s) {missing}", i, name)
        return False
    bbox = entry["bbox"]
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        n = len(bbox) if isinstance(bbox, (list, tuple)) else type(bbox).__name__
        log.problem("bad_bbox", afile, f"bbox must be 4 numbers [xmin, ymin, xmax, ymax], got {n}: {bbox!r}", i, name)
        return False
    coords = [_number(v) for v in bbox]
    if any(c is None for c in coords):
        log.problem("bad_bbox", afile, f"bbox has non-numeric / non-finite values: {bbox!r}", i, name)
        return False
    cat = lookup(entry["defect_name"])
    if cat is None:
        log.problem("unknown_class", afile, f"unknown class {entry['defect_name']!r}", i, name)
        return False
    img = index.get(os.path.basename(name)) if isinstance(name, str) else None
    if img is None and isinstance(name, str):
        img = stems.get(os.path.splitext(os.path.basename(name))[0])
    if img is None:
        log.problem("image_not_found", afile,
                    f"image not found under defect/ or normal/ of {', '.join(roots)}", i, name)
        return False
    if img["is_normal"]:
        log.problem("annotation_on_normal_image", afile,
                    f"annotates an image in a normal/ folder: {img['path']}", i, name)
        return False
    img["n_entries"] += 1
    if not img["ok"]:
        log.count("image_dropped", _describe(afile, f"its image {img['path']} was dropped", i, name))
        return False
    mask = None
    if entry.get("segmentation") is not None:
        mask, problem, area = _check_segmentation(entry["segmentation"], img["width"], img["height"])
        if problem is not None:
            log.problem("bad_mask", afile, f"{problem} (image {img['path']}); the box is kept in --lenient", i, name)
        elif area == 0:
            log.count("empty_mask", _describe(afile, "mask has no foreground pixel (box kept)", i, name))
            mask = None
    img["raw_boxes"].append((cat, *coords, (afile, i, name), mask))
    return True


def convert_fabric(roots, out_dir, *, anno_files=None, prefix="fabric", test_size=500, val_size=0, split=True,
                   seed=0, image_root=None, strict=True, verbose=True):
    """
    Convert a Tianchi 2019 fabric (round 2) release to COCO JSON.

    Args:
        roots (str or list[str]): release roots; images are found under ``<root>/defect/`` and
            ``<root>/normal/`` (``<stem>/<stem>.jpg`` + ``<stem>/template_<prefix>.jpg``). Annotation
            names are resolved against the images of *all* roots.
        out_dir (str): where ``<prefix>_train.json`` / ``<prefix>_test.json`` (or ``<prefix>.json``) go.
        anno_files (list[str] or None): annotation JSON lists; default every ``<root>/Annotations/*.json``.
        prefix (str): output file prefix.
        test_size (int): number of images (defect and normal) in the test split.
        val_size (int): number of images carved from the training part into ``<prefix>_val.json``
            (0: none). The test split is the same with or without it.
        split (bool): False writes everything to ``<prefix>.json``.
        seed (int): seed of the split (over images sorted by file name, so listing order is irrelevant).
        image_root (str or None): ``file_name`` / ``template_file_name`` are relative to it; default the
            common parent of ``roots``.
        strict (bool): raise :class:`TianchiFormatError` on the first bad input; False skips and counts.
        verbose (bool): print the report.

    Returns:
        dict: the report (see :func:`format_report`; ``boxes_in == boxes_written + sum(boxes_dropped)``).
    """
    roots, image_root = _prepare_roots(roots, image_root)
    log = _Log(strict)
    report = _new_report("fabric", strict, roots, image_root)
    lookup = _category_lookup("fabric")

    # 1. images (both kinds, all roots), indexed by file name; every image and template is decoded
    index, images, template_sizes = {}, [], {}
    for root in roots:
        has_images = False
        for kind in ("defect", "normal"):
            top = os.path.join(root, kind)
            if not os.path.isdir(top):
                continue
            has_images = True
            for path in _walk_files(top):
                fname = os.path.basename(path)
                if not _is_image(fname) or fname.startswith("template_"):
                    continue
                report["images_found"][kind] += 1
                if fname in index:
                    log.problem("duplicate_image_name", path,
                                f"image file name also found at {index[fname]['path']}")
                    continue
                img = {"path": path, "is_normal": kind == "normal", "raw_boxes": [], "n_entries": 0,
                       "ok": False}
                index[fname] = img
                template = _fabric_template(path)
                if template is None:
                    stem = os.path.splitext(fname)[0]
                    log.problem("missing_template", path,
                                f"template image template_{stem.split('_')[0]}.jpg missing beside it")
                    continue
                size = _try_size(path, log)
                if size is None:
                    continue
                tsize = _try_size(template, log, "template", cache=template_sizes)
                if tsize is None:
                    continue
                if tsize != size:
                    log.problem("template_size_mismatch", path,
                                f"template {template} is {tsize[0]}x{tsize[1]} but the image is "
                                f"{size[0]}x{size[1]} (WxH); the template methods need them equal. Replace "
                                "the template, or --lenient drops the image")
                    continue
                img.update(ok=True, template=template, width=size[0], height=size[1])
                images.append(img)
        if not has_images and not os.path.isdir(os.path.join(root, "Annotations")):
            raise TianchiFormatError(root, "no defect/, normal/ or Annotations/ folder: not a fabric release root")
    stems = {os.path.splitext(k)[0]: v for k, v in index.items()}

    # 2. annotation files
    if anno_files is None:
        anno_files = []
        for root in roots:
            adir = os.path.join(root, "Annotations")
            if os.path.isdir(adir):
                anno_files += [os.path.join(adir, f) for f in os.listdir(adir) if f.lower().endswith(".json")]
        if not anno_files:
            raise TianchiFormatError(", ".join(roots), "no Annotations/*.json found (pass anno_files)")
    anno_files = sorted({os.path.abspath(os.fspath(a)) for a in anno_files})
    report["annotation_files"] = anno_files
    for afile in anno_files:
        # a file that cannot be read would leave every image it labels without boxes: fatal
        try:
            data = _load_json(afile)
        except json.JSONDecodeError as e:
            raise TianchiFormatError(afile, f"malformed JSON: {e.msg} at line {e.lineno} column {e.colno} "
                                     f"(char {e.pos}); an error also with --lenient",
                                     reason="annotation_file_malformed") from None
        except (OSError, UnicodeDecodeError) as e:
            raise TianchiFormatError(afile, f"cannot read the annotation file ({e}); an error also with "
                                     "--lenient", reason="annotation_file_malformed") from None
        if not isinstance(data, list):
            raise TianchiFormatError(afile, f"top level is a JSON {type(data).__name__}, expected a list of "
                                     "{name, defect_name, bbox} objects; an error also with --lenient",
                                     reason="annotation_file_not_list")
        if not data:
            log.problem("annotation_file_empty", afile, "the annotation file holds an empty list: no box for any "
                        "image (remove the file, pass the right one with --anno, or --lenient to skip it)")
        for i, entry in enumerate(data):
            report["boxes_in"] += 1
            has_mask = isinstance(entry, dict) and entry.get("segmentation") is not None
            report["masks_in"] += int(has_mask)
            if not _read_fabric_entry(entry, i, afile, index, stems, roots, lookup, log) and has_mask:
                log.count("mask_of_dropped_box", _describe(afile, "its box was dropped", i, entry.get("name")))

    return _finish("fabric", images, log, report, roots=roots, anno_files=anno_files, out_dir=out_dir,
                   prefix=prefix, test_size=test_size, val_size=val_size, split=split, seed=seed, image_root=image_root,
                   verbose=verbose)
